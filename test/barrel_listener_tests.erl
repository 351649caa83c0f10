%% @doc Listeners: start_listener/2, stop_listener/1, patterns, replay + live,
%% isolation, cleanup and bounded memory.
-module(barrel_listener_tests).
-include_lib("eunit/include/eunit.hrl").

listener_test_() ->
    {setup, fun barrel_test_setup:start/0, fun barrel_test_setup:stop/1,
     fun(_) ->
             [{"live changes to a process", fun live_to_process/0},
              {"since => now hears only later changes", fun since_now/0},
              {"pattern forms", fun patterns/0},
              {"a doc leaving a pattern, and its deletion, are heard", fun leave_and_delete/0},
              {timeout, 60, {"replay then live under concurrent writers: every seq once, in order",
                             fun replay_and_live_concurrent/0}},
              {"the owner's death stops the listener", fun owner_death/0},
              {"a crashing callback is isolated", fun callback_crash/0},
              {timeout, 120, {"a slow receiver keeps bounded memory and gets everything",
                              fun slow_receiver/0}},
              {"stop_listener and bad options", fun stop_and_bad_options/0},
              {"deleting the barrel stops its listeners", fun barrel_deleted/0},
              {"include_docs and all_docs", fun docs_and_style/0}]
     end}.

save(B, Doc) ->
    {ok, Id, Rev} = barrel:save_doc(B, Doc),
    {Id, Rev}.

%% The changes a listener sent to this process, until none came for Ms.
collect(L, Ms) ->
    receive {barrel_change, L, C} -> [C | collect(L, Ms)]
    after Ms -> []
    end.

%% Exactly N changes from L (fails after 10 s without one).
collect_n(_L, 0) -> [];
collect_n(L, N) ->
    receive {barrel_change, L, C} -> [C | collect_n(L, N - 1)]
    after 10000 -> error({missing_changes, N})
    end.

seqs(Cs) -> [S || #{<<"seq">> := S} <- Cs].
ids(Cs) -> [Id || #{<<"id">> := Id} <- Cs].

wait_dead(Pid) ->
    Ref = erlang:monitor(process, Pid),
    receive {'DOWN', Ref, process, Pid, _} -> ok
    after 5000 -> error({still_alive, Pid})
    end.

live_to_process() ->
    {_, B} = barrel_test_setup:fresh_barrel(<<"li">>),
    {ok, L} = barrel:start_listener(B, #{subscribe_to => [<<"/*">>]}),
    {_, Rev} = save(B, #{<<"id">> => <<"a">>}),
    [C] = collect_n(L, 1),
    ?assertMatch(#{<<"id">> := <<"a">>, <<"rev">> := Rev, <<"seq">> := 1,
                   <<"changes">> := [Rev]}, C),
    ok = barrel:stop_listener(L).

since_now() ->
    {Name, B} = barrel_test_setup:fresh_barrel(<<"li">>),
    save(B, #{<<"id">> => <<"old">>}),
    %% A barrel name works too; `since' defaults to `now'.
    {ok, L} = barrel:start_listener(Name, #{}),
    save(B, #{<<"id">> => <<"new">>}),
    ?assertEqual([<<"new">>], ids(collect(L, 100))),
    ok = barrel:stop_listener(L).

patterns() ->
    {_, B} = barrel_test_setup:fresh_barrel(<<"li">>),
    Ps = [[<<"/*">>], [<<"/id/u1">>], [<<"/type/user">>], [<<"/locations/+/country/france">>],
          [<<"/metrics/#">>], [<<"/+/3">>], [<<"/id/o1">>, <<"/type/user">>], [<<"#">>]],
    Ls = [begin {ok, L} = barrel:start_listener(B, #{subscribe_to => P}), L end || P <- Ps],
    save(B, #{<<"id">> => <<"u1">>, <<"type">> => <<"User">>,
              <<"locations">> => [#{<<"country">> => <<"Spain">>},
                                  #{<<"country">> => <<"France">>}]}),
    save(B, #{<<"id">> => <<"o1">>, <<"type">> => <<"order">>, <<"n">> => 3,
              <<"metrics">> => #{<<"views">> => 1}}),
    save(B, #{<<"id">> => <<"u2">>, <<"type">> => <<"user">>}),
    Got = [ids(collect(L, 150)) || L <- Ls],
    ?assertEqual([[<<"u1">>, <<"o1">>, <<"u2">>],
                  [<<"u1">>],
                  [<<"u1">>, <<"u2">>],
                  [<<"u1">>],
                  [<<"o1">>],
                  [<<"o1">>],
                  [<<"u1">>, <<"o1">>, <<"u2">>],
                  [<<"u1">>, <<"o1">>, <<"u2">>]], Got),
    [ok = barrel:stop_listener(L) || L <- Ls].

leave_and_delete() ->
    {_, B} = barrel_test_setup:fresh_barrel(<<"li">>),
    {ok, L} = barrel:start_listener(B, #{subscribe_to => [<<"/type/user">>]}),
    {_, R1} = save(B, #{<<"id">> => <<"u">>, <<"type">> => <<"user">>}),
    {_, R2} = save(B, #{<<"id">> => <<"u">>, <<"_rev">> => R1, <<"type">> => <<"admin">>}),
    {_, R3} = save(B, #{<<"id">> => <<"u">>, <<"_rev">> => R2, <<"type">> => <<"guest">>}),
    {_, R4} = save(B, #{<<"id">> => <<"u">>, <<"_rev">> => R3, <<"type">> => <<"user">>}),
    {ok, _, _} = barrel:delete_doc(B, <<"u">>, R4),
    Cs = collect(L, 150),
    %% 1: matches; 2: leaves (old revision matched); 3: neither; 4: back; 5: deleted.
    ?assertEqual([1, 2, 4, 5], seqs(Cs)),
    ?assertMatch(#{<<"deleted">> := true}, lists:last(Cs)),
    ok = barrel:stop_listener(L).

%% Writers run before, during and after the listener starts with since => 0:
%% it must deliver every seq exactly once and in order (each doc is written
%% once, so the feed has every seq).
replay_and_live_concurrent() ->
    {_, B} = barrel_test_setup:fresh_barrel(<<"li">>),
    Writers = 4, PerWriter = 1500,
    Self = self(),
    Pids = [spawn_link(fun() ->
                               [save(B, #{<<"id">> => iolist_to_binary(io_lib:format("w~p-~p", [W, I])),
                                          <<"n">> => I})
                                || I <- lists:seq(1, PerWriter)],
                               Self ! {written, W}
                       end) || W <- lists:seq(1, Writers)],
    %% Let the writers get going, so the replay has a backlog and the switch
    %% to live happens while they write.
    timer:sleep(30),
    {ok, L} = barrel:start_listener(B, #{since => 0, window => 50}),
    [receive {written, W} -> ok end || W <- lists:seq(1, Writers)],
    Total = Writers * PerWriter,
    Cs = collect_n(L, Total),
    ?assertEqual(lists:seq(1, Total), seqs(Cs)),
    ?assertEqual([], collect(L, 100)),
    _ = Pids,
    ok = barrel:stop_listener(L).

owner_death() ->
    {_, B} = barrel_test_setup:fresh_barrel(<<"li">>),
    Self = self(),
    Owner = spawn(fun() ->
                          {ok, L} = barrel:start_listener(B, #{to => Self}),
                          Self ! {listener, L},
                          receive stop -> ok end
                  end),
    L = receive {listener, P} -> P end,
    save(B, #{<<"id">> => <<"a">>}),
    [_] = collect_n(L, 1),
    Owner ! stop,
    wait_dead(L),
    save(B, #{<<"id">> => <<"b">>}),
    ?assertEqual([], collect(L, 50)),
    ?assertEqual([], supervisor:which_children(barrel_listener_sup)).

callback_crash() ->
    {_, B} = barrel_test_setup:fresh_barrel(<<"li">>),
    Self = self(),
    Fun = fun(#{<<"id">> := <<"boom">>}) -> error(boom);
             (#{<<"id">> := Id}) -> Self ! {cb, Id}
          end,
    {ok, L1} = barrel:start_listener(B, #{callback_fun => Fun}),
    {ok, L2} = barrel:start_listener(B, #{}),
    %% Keep the expected crash report out of the test output.
    logger:add_primary_filter(quiet, {fun(#{msg := {F, _}}, _) when is_list(F) ->
                                              case string:find(F, "callback crashed") of
                                                  nomatch -> ignore;
                                                  _ -> stop
                                              end;
                                         (_, _) -> ignore
                                      end, []}),
    try
        save(B, #{<<"id">> => <<"a">>}),
        save(B, #{<<"id">> => <<"boom">>}),
        save(B, #{<<"id">> => <<"c">>}),
        Got = [receive {cb, Id} -> Id after 5000 -> timeout end || _ <- [1, 2]],
        ?assertEqual([<<"a">>, <<"c">>], Got),
        ?assert(is_process_alive(L1)),
        ?assertEqual([<<"a">>, <<"boom">>, <<"c">>], ids(collect_n(L2, 3))),
        ?assertMatch({ok, _}, barrel:fetch_doc(B, <<"boom">>))
    after
        logger:remove_primary_filter(quiet)
    end,
    ok = barrel:stop_listener(L1),
    ok = barrel:stop_listener(L2).

%% A receiver that handles one change a millisecond, while writers go much
%% faster: the listener's mailbox stays within its window, the receiver's
%% within max_queue, and every change still arrives, once, in order.
slow_receiver() ->
    {_, B} = barrel_test_setup:fresh_barrel(<<"li">>),
    Self = self(),
    MaxQueue = 20, Window = 50, Total = 3000,
    Receiver = spawn_link(fun() -> slow_loop(Self, []) end),
    {ok, L} = barrel:start_listener(B, #{to => Receiver, max_queue => MaxQueue,
                                         window => Window}),
    Sampler = spawn_link(fun() -> sample(L, Receiver, {0, 0}) end),
    {ok, Results} = barrel:save_docs(B, [#{<<"id">> => integer_to_binary(I)}
                                         || I <- lists:seq(1, Total)]),
    ?assertEqual(Total, length(Results)),
    Receiver ! {done_when, Total},
    Seqs = receive {received, S} -> S after 100000 -> error(slow_receiver_timeout) end,
    Sampler ! {stop, Self},
    {MaxL, MaxR} = receive {max, M} -> M end,
    ?assertEqual(lists:seq(1, Total), Seqs),
    %% Messages to the listener carry one commit group each: at most Window
    %% changes in flight, plus a few control messages.
    ?assert(MaxL =< Window + 5),
    ?assert(MaxR =< MaxQueue + 1),
    %% The receiver is done and gone: so is the listener.
    wait_dead(L).

slow_loop(Parent, Acc) ->
    receive
        {barrel_change, _, #{<<"seq">> := S}} ->
            timer:sleep(1),
            Acc1 = [S | Acc],
            slow_loop_check(Parent, Acc1);
        {done_when, N} ->
            put(done_when, N),
            slow_loop_check(Parent, Acc)
    end.

slow_loop_check(Parent, Acc) ->
    case get(done_when) of
        N when is_integer(N), length(Acc) >= N ->
            Parent ! {received, lists:reverse(Acc)};
        _ ->
            slow_loop(Parent, Acc)
    end.

sample(L, R, {ML, MR}) ->
    Len = fun(P) -> case erlang:process_info(P, message_queue_len) of
                        {message_queue_len, N} -> N;
                        undefined -> 0
                    end
          end,
    receive {stop, To} -> To ! {max, {ML, MR}}
    after 1 -> sample(L, R, {max(ML, Len(L)), max(MR, Len(R))})
    end.

stop_and_bad_options() ->
    {_, B} = barrel_test_setup:fresh_barrel(<<"li">>),
    {ok, L} = barrel:start_listener(B, #{}),
    ok = barrel:stop_listener(L),
    ?assertNot(is_process_alive(L)),
    ?assertEqual({error, not_found}, barrel:stop_listener(L)),
    save(B, #{<<"id">> => <<"a">>}),
    ?assertEqual([], collect(L, 50)),
    ?assertEqual({error, {bad_option, {since, -1}}}, barrel:start_listener(B, #{since => -1})),
    ?assertEqual({error, {bad_option, {subscribe_to, []}}},
                 barrel:start_listener(B, #{subscribe_to => []})),
    ?assertEqual({error, {bad_option, {to, self}}}, barrel:start_listener(B, #{to => self})),
    ?assertEqual({error, {bad_option, {callback_fun, 1}}},
                 barrel:start_listener(B, #{callback_fun => 1})),
    ?assertEqual({error, {bad_pattern, <<"no-slash">>}},
                 barrel:start_listener(B, #{subscribe_to => [<<"no-slash">>]})),
    ?assertEqual({error, not_found}, barrel:start_listener(<<"no-such-barrel">>, #{})),
    ?assertEqual({error, {bad_arg, barrel}}, barrel:start_listener(42, #{})),
    ?assertEqual({error, {bad_arg, barrel}}, barrel:start_listener(make_ref(), #{})),
    %% start_link/2 answers errors found by the engine too, without exiting its caller.
    ?assertEqual({error, {bad_pattern, <<"x">>}},
                 barrel_listener:start_link(B, #{subscribe_to => [<<"x">>]})),
    {Name2, B2} = barrel_test_setup:fresh_barrel(<<"li">>),
    ok = barrel:delete_barrel(Name2),
    ?assertEqual({error, not_found}, barrel_listener:start_link(B2, #{})),
    ?assertEqual({error, {bad_option, nomap}}, barrel:start_listener(B, nomap)),
    ?assertEqual([], supervisor:which_children(barrel_listener_sup)).

barrel_deleted() ->
    {Name, B} = barrel_test_setup:fresh_barrel(<<"li">>),
    {ok, L} = barrel:start_listener(B, #{}),
    ok = barrel:delete_barrel(Name),
    wait_dead(L).

docs_and_style() ->
    {_, B} = barrel_test_setup:fresh_barrel(<<"li">>),
    {ok, L} = barrel:start_listener(B, #{include_docs => true, style => all_docs,
                                         null => nil}),
    {_, R1} = save(B, #{<<"id">> => <<"a">>, <<"v">> => null}),
    {ok, _, _} = barrel:save_doc(B, #{<<"id">> => <<"a">>, <<"_rev">> => <<"1-ffffffff">>,
                                      <<"v">> => 2}, #{new_edits => false}),
    [C1, C2] = collect_n(L, 2),
    ?assertMatch(#{<<"doc">> := #{<<"id">> := <<"a">>, <<"v">> := nil, <<"_rev">> := R1}}, C1),
    ?assertMatch(#{<<"rev">> := <<"1-ffffffff">>, <<"changes">> := [<<"1-ffffffff">>, R1],
                   <<"doc">> := #{<<"v">> := 2}}, C2),
    ok = barrel:stop_listener(L).
