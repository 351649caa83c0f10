%% @doc A rebar3 application using Barrel: `run/0' creates a barrel, saves a
%% document and fetches it back.
%%
%% Barrel keeps its data under the `data_dir' environment variable of the
%% `barrel' application (set it in `sys.config' for a release):
%% ```
%% ok = application:load(barrel),
%% ok = application:set_env(barrel, data_dir, "/var/lib/myapp/barrel"),
%% {ok, _} = application:ensure_all_started(rebar3_app),
%% {ok, #{<<"id">> := _, <<"_rev">> := _, <<"hello">> := <<"world">>}} = rebar3_app:run().
%% '''
-module(rebar3_app).

-export([run/0]).

-define(BARREL, <<"rebar3_app">>).

%% @doc Creates the `rebar3_app' barrel unless it exists, saves a new document
%% in it and returns the document as read back from the store.
-spec run() -> {ok, barrel:doc()}.
run() ->
    ok = create_barrel(),
    {ok, Barrel} = barrel:open(?BARREL),
    {ok, DocId, _Rev} = barrel:save_doc(Barrel, #{<<"hello">> => <<"world">>}),
    {ok, Doc} = barrel:fetch_doc(Barrel, DocId),
    ok = barrel:close(Barrel),
    {ok, Doc}.

create_barrel() ->
    case barrel:create_barrel(?BARREL, #{}) of
        ok -> ok;
        {error, already_exists} -> ok
    end.
