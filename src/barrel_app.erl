%% @private
%% @doc The `barrel' application: opens the node's store under the `data_dir'
%% application environment variable (default `"barrel_data"', relative to the
%% current directory) and starts the supervisor.
-module(barrel_app).
-behaviour(application).

-export([start/2, stop/1]).

start(_Type, _Args) ->
    Dir = application:get_env(barrel, data_dir, "barrel_data"),
    Opts = maps:from_list([{Key, V} || Key <- [block_cache_bytes, tune_malloc,
                                               low_priority_compactions],
                                       {ok, V} <- [application:get_env(barrel, Key)]]),
    case barrel_nif:store_open(unicode:characters_to_binary(Dir), Opts) of
        ok ->
            case barrel_sup:start_link() of
                {ok, Sup} ->
                    %% Persistent replications (replicate/2 with persist => true).
                    ok = barrel_replicator:restore(),
                    {ok, Sup};
                Error ->
                    Error
            end;
        {error, Reason} ->
            {error, {store_open_failed, Dir, Reason}}
    end.

stop(_State) ->
    barrel_nif:store_close().
