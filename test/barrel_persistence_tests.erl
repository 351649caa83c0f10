%% Data survives close/open, application restarts and VM restarts.
-module(barrel_persistence_tests).
-include_lib("eunit/include/eunit.hrl").

app_restart_test() ->
    Dir = barrel_test_setup:start(),
    ok = barrel:create_barrel(<<"keep">>, #{}),
    {ok, B} = barrel:open(<<"keep">>),
    {ok, _, Rev} = barrel:save_doc(B, #{<<"id">> => <<"a">>, <<"v">> => 1}),
    ok = barrel:close(B),
    {ok, B1} = barrel:open(<<"keep">>),
    ?assertMatch({ok, #{<<"_rev">> := Rev}}, barrel:fetch_doc(B1, <<"a">>)),
    ok = application:stop(barrel),
    %% With the store closed, old handles answer closed.
    ?assertEqual({error, closed}, barrel:fetch_doc(B1, <<"a">>)),
    ?assertEqual({error, closed}, barrel:store_info()),
    {ok, _} = application:ensure_all_started(barrel),
    {ok, B2} = barrel:open(<<"keep">>),
    ?assertMatch({ok, #{<<"_rev">> := Rev, <<"v">> := 1}}, barrel:fetch_doc(B2, <<"a">>)),
    ?assertMatch({ok, #{updated_seq := 1, docs_count := 1}}, barrel:barrel_infos(<<"keep">>)),
    %% Sequences go on from where they were.
    {ok, _, _} = barrel:save_doc(B2, #{}),
    ?assertMatch({ok, #{updated_seq := 2}}, barrel:barrel_infos(<<"keep">>)),
    barrel_test_setup:stop(Dir).

%% Stopping the application writes the memtables out to table files: the store
%% it leaves has no write-ahead log contents to replay (and takes less disk), and
%% documents and index are all there when it starts again.
app_stop_flushes_the_logs_test() ->
    Dir = barrel_test_setup:start(),
    ok = barrel:create_barrel(<<"flushed">>, #{}),
    {ok, B} = barrel:open(<<"flushed">>),
    {ok, _} = barrel:save_docs(B, [#{<<"id">> => integer_to_binary(I), <<"v">> => I}
                                   || I <- lists:seq(1, 500)]),
    ?assert(log_bytes(Dir) > 0),
    ok = application:stop(barrel),
    ?assertEqual(0, log_bytes(Dir)),
    {ok, _} = application:ensure_all_started(barrel),
    {ok, B2} = barrel:open(<<"flushed">>),
    ?assertMatch({ok, #{<<"v">> := 500}}, barrel:fetch_doc(B2, <<"500">>)),
    ?assertMatch({ok, [#{<<"id">> := <<"250">>}]}, barrel:find(B2, {<<"$/v">>, #{equal => 250}})),
    ?assertMatch({ok, #{docs_count := 500}}, barrel:barrel_infos(B2)),
    barrel_test_setup:stop(Dir).

%% Bytes in the store's write-ahead logs (RocksDB's `NNNNNN.log' files).
log_bytes(Dir) ->
    filelib:fold_files(Dir, "^[0-9]+\\.log$", true,
                       fun(F, Acc) -> Acc + filelib:file_size(F) end, 0).

vm_restart_test_() ->
    {timeout, 60, fun vm_restart/0}.

vm_restart() ->
    Dir = barrel_test_setup:tmp_dir(),
    Rev = in_new_vm(Dir, fun() ->
        ok = barrel:create_barrel(<<"durable">>, #{}),
        {ok, B} = barrel:open(<<"durable">>),
        {ok, [{ok, _, _}, {ok, _, R}]} =
            barrel:save_docs(B, [#{<<"id">> => <<"x">>}, #{<<"id">> => <<"y">>, <<"v">> => 2}]),
        R
    end),
    Fetched = in_new_vm(Dir, fun() ->
        {ok, B} = barrel:open(<<"durable">>),
        {barrel:fetch_doc(B, <<"y">>), barrel:barrel_infos(B)}
    end),
    ?assertMatch({{ok, #{<<"_rev">> := Rev, <<"v">> := 2}},
                  {ok, #{docs_count := 2, updated_seq := 2}}}, Fetched),
    ok = barrel_test_setup:rm_dir(Dir).

%% Runs Fun in a fresh VM (a peer node) with barrel started on Dir, then
%% stops that VM.
in_new_vm(Dir, Fun) ->
    Paths = [filename:dirname(code:which(M)) || M <- [barrel, ?MODULE]],
    {ok, Peer, _Node} = peer:start_link(#{connection => standard_io,
                                          args => ["-pa" | Paths]}),
    try
        ok = peer:call(Peer, application, load, [barrel]),
        ok = peer:call(Peer, application, set_env, [barrel, data_dir, Dir]),
        {ok, _} = peer:call(Peer, application, ensure_all_started, [barrel]),
        peer:call(Peer, erlang, apply, [Fun, []], 30000)
    after
        peer:stop(Peer)
    end.

unusable_data_dir_fails_start_cleanly_test() ->
    _ = application:stop(barrel),
    Dir = barrel_test_setup:tmp_dir(),
    File = filename:join(Dir, "a-file"),
    ok = file:write_file(File, <<"not a directory">>),
    _ = application:load(barrel),
    ok = application:set_env(barrel, data_dir, File),
    ?assertMatch({error, {barrel, {{store_open_failed, File, {storage_error, _}}, _}}},
                 application:ensure_all_started(barrel)),
    %% Nothing is left half-open: a good directory works right after.
    Good = filename:join(Dir, "good"),
    ok = application:set_env(barrel, data_dir, Good),
    ?assertMatch({ok, _}, application:ensure_all_started(barrel)),
    ?assertEqual(ok, barrel:create_barrel(<<"after">>, #{})),
    ok = application:stop(barrel),
    ok = barrel_test_setup:rm_dir(Dir).

%% The store options of the application environment reach the store: a bad one
%% fails the start with a reason naming it, good ones start it.
store_options_from_the_environment_test() ->
    _ = application:stop(barrel),
    Dir = barrel_test_setup:tmp_dir(),
    _ = application:load(barrel),
    ok = application:set_env(barrel, data_dir, Dir),
    try
        ok = application:set_env(barrel, tune_malloc, yes),
        ?assertMatch({error, {barrel, {{store_open_failed, _,
                                        {bad_param, <<"tune_malloc must be a boolean">>}}, _}}},
                     application:ensure_all_started(barrel)),
        ok = application:set_env(barrel, tune_malloc, false),
        ok = application:set_env(barrel, low_priority_compactions, 1),
        ?assertMatch({error, {barrel, {{store_open_failed, _,
                                        {bad_param,
                                         <<"low_priority_compactions must be a boolean">>}}, _}}},
                     application:ensure_all_started(barrel)),
        ok = application:set_env(barrel, low_priority_compactions, true),
        ok = application:set_env(barrel, block_cache_bytes, many),
        ?assertMatch({error, {barrel, {{store_open_failed, _,
                                        {bad_param, <<"block_cache_bytes must be an integer">>}}, _}}},
                     application:ensure_all_started(barrel)),
        ok = application:set_env(barrel, block_cache_bytes, 8 * 1024 * 1024),
        ?assertMatch({ok, _}, application:ensure_all_started(barrel)),
        ?assertEqual(ok, barrel:create_barrel(<<"opts">>, #{})),
        {ok, B} = barrel:open(<<"opts">>),
        ?assertMatch({ok, _, _}, barrel:save_doc(B, #{<<"id">> => <<"a">>}))
    after
        _ = application:stop(barrel),
        ok = application:unset_env(barrel, tune_malloc),
        ok = application:unset_env(barrel, low_priority_compactions),
        ok = application:unset_env(barrel, block_cache_bytes),
        ok = barrel_test_setup:rm_dir(Dir)
    end.

%% Writers racing with the application stopping each get an answer (written,
%% or closed), and none hangs.
writes_racing_a_stop_all_return_test_() ->
    {timeout, 60, fun writes_racing_a_stop_all_return/0}.

writes_racing_a_stop_all_return() ->
    Dir = barrel_test_setup:start(),
    ok = barrel:create_barrel(<<"race">>, #{}),
    {ok, B} = barrel:open(<<"race">>),
    Self = self(),
    Pids = [spawn_link(fun() ->
                               Results = [barrel:save_doc(B, #{<<"w">> => W, <<"i">> => I})
                                          || I <- lists:seq(1, 200)],
                               Self ! {done, self(), Results}
                       end) || W <- lists:seq(1, 8)],
    timer:sleep(5),
    ok = application:stop(barrel),
    Results = lists:append([receive {done, P, R} -> R after 30000 -> error(hang) end
                            || P <- Pids]),
    ?assertEqual(1600, length(Results)),
    ?assertEqual([], [R || R <- Results, not is_ok_or_closed(R)]),
    ok = barrel_test_setup:rm_dir(Dir).

is_ok_or_closed({ok, _, _}) -> true;
is_ok_or_closed({error, closed}) -> true;
is_ok_or_closed(_) -> false.
