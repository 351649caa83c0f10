-module(rebar3_app_tests).

-include_lib("eunit/include/eunit.hrl").

%% Each test starts barrel (and this app) on a fresh data dir and removes it after.
app_test_() ->
    {foreach, fun start/0, fun stop/1,
     [fun run_returns_the_saved_document/1,
      fun run_twice_saves_two_documents/1]}.

run_returns_the_saved_document(_DataDir) ->
    {ok, Doc} = rebar3_app:run(),
    [?_assertMatch(#{<<"id">> := <<_/binary>>, <<"_rev">> := <<"1-", _/binary>>}, Doc),
     ?_assertEqual(<<"world">>, maps:get(<<"hello">>, Doc))].

run_twice_saves_two_documents(_DataDir) ->
    {ok, #{<<"id">> := Id1}} = rebar3_app:run(),
    {ok, #{<<"id">> := Id2}} = rebar3_app:run(),
    {ok, #{docs_count := Count}} = barrel:barrel_infos(<<"rebar3_app">>),
    [?_assertNotEqual(Id1, Id2),
     ?_assertEqual(2, Count)].

start() ->
    DataDir = filename:join(temp_root(), io_lib:format("rebar3_app-~s-~b",
                                                      [os:getpid(), erlang:unique_integer([positive])])),
    ok = filelib:ensure_dir(filename:join(DataDir, "x")),
    %% Load first: loading would reset data_dir to the .app default.
    ok = load(barrel),
    ok = application:set_env(barrel, data_dir, DataDir),
    {ok, _} = application:ensure_all_started(rebar3_app),
    DataDir.

stop(DataDir) ->
    ok = application:stop(rebar3_app),
    ok = application:stop(barrel),
    ok = file:del_dir_r(DataDir).

load(App) ->
    case application:load(App) of
        ok -> ok;
        {error, {already_loaded, App}} -> ok
    end.

temp_root() ->
    case os:getenv("TMPDIR") of
        Dir when is_list(Dir), Dir =/= "" -> Dir;
        _ -> "/tmp"
    end.
