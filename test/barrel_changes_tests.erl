%% @doc The changes feed through the public API: fold_changes/5, changes/3.
-module(barrel_changes_tests).
-include_lib("eunit/include/eunit.hrl").

changes_test_() ->
    {setup, fun barrel_test_setup:start/0, fun barrel_test_setup:stop/1,
     fun(_) ->
             [{"each doc once, at its latest seq", fun latest_seq_only/0},
              {"since, now and last_seq", fun since_and_last_seq/0},
              {"limit and descending", fun limit_and_descending/0},
              {"include_docs, deletions and all_docs", fun docs_deletions_conflicts/0},
              {"path filters", fun filters/0},
              {"one snapshot per fold", fun snapshot/0},
              {"bad arguments", fun bad_arguments/0},
              {"fold stops early", fun fold_stop/0}]
     end}.

save(B, Doc) ->
    {ok, Id, Rev} = barrel:save_doc(B, Doc),
    {Id, Rev}.

ids(Changes) -> [{Id, Seq} || #{<<"id">> := Id, <<"seq">> := Seq} <- Changes].

latest_seq_only() ->
    {_, B} = barrel_test_setup:fresh_barrel(<<"ch">>),
    {_, R1} = save(B, #{<<"id">> => <<"a">>, <<"v">> => 1}),
    save(B, #{<<"id">> => <<"b">>}),
    save(B, #{<<"id">> => <<"a">>, <<"_rev">> => R1, <<"v">> => 2}),
    {ok, Changes, 3} = barrel:changes(B, 0, #{}),
    ?assertEqual([{<<"b">>, 2}, {<<"a">>, 3}], ids(Changes)),
    [#{<<"rev">> := Rev, <<"changes">> := [Rev]} | _] = Changes,
    ?assertNot(maps:is_key(<<"doc">>, hd(Changes))).

since_and_last_seq() ->
    {_, B} = barrel_test_setup:fresh_barrel(<<"ch">>),
    ?assertEqual({ok, [], 0}, barrel:changes(B, 0, #{})),
    [save(B, #{<<"id">> => integer_to_binary(I)}) || I <- lists:seq(1, 5)],
    {ok, C1, 5} = barrel:changes(B, 3, #{}),
    ?assertEqual([4, 5], [S || #{<<"seq">> := S} <- C1]),
    ?assertEqual({ok, [], 5}, barrel:changes(B, now, #{})),
    ?assertEqual({ok, [], 5}, barrel:changes(B, 5, #{})),
    %% A since beyond the end keeps its value as the place to continue from.
    ?assertEqual({ok, [], 9}, barrel:changes(B, 9, #{})).

limit_and_descending() ->
    {_, B} = barrel_test_setup:fresh_barrel(<<"ch">>),
    [save(B, #{<<"id">> => integer_to_binary(I)}) || I <- lists:seq(1, 600)],
    {ok, C1, Last1} = barrel:changes(B, 0, #{limit => 300}),
    ?assertEqual(lists:seq(1, 300), [S || #{<<"seq">> := S} <- C1]),
    ?assertEqual(300, Last1),
    {ok, C2, 600} = barrel:changes(B, Last1, #{}),
    ?assertEqual(lists:seq(301, 600), [S || #{<<"seq">> := S} <- C2]),
    {ok, D, 600} = barrel:changes(B, 590, #{descending => true}),
    ?assertEqual(lists:seq(600, 591, -1), [S || #{<<"seq">> := S} <- D]),
    {ok, D2, 600} = barrel:changes(B, 0, #{descending => true, limit => 2}),
    ?assertEqual([600, 599], [S || #{<<"seq">> := S} <- D2]),
    ?assertEqual({ok, [], 0}, barrel:changes(B, 0, #{limit => 0})).

docs_deletions_conflicts() ->
    {_, B} = barrel_test_setup:fresh_barrel(<<"ch">>),
    {_, Ra} = save(B, #{<<"id">> => <<"a">>, <<"k">> => null}),
    {ok, _, Rd} = barrel:delete_doc(B, <<"a">>, Ra),
    {_, Rb} = save(B, #{<<"id">> => <<"b">>, <<"k">> => 1}),
    {ok, _, _} = barrel:save_doc(B, #{<<"id">> => <<"b">>, <<"_rev">> => <<"1-ffffffff">>,
                                      <<"k">> => 2}, #{new_edits => false}),
    {ok, [A, Bc], 4} = barrel:changes(B, 0, #{include_docs => true, null => nil}),
    ?assertMatch(#{<<"id">> := <<"a">>, <<"deleted">> := true, <<"rev">> := Rd,
                   <<"doc">> := #{<<"id">> := <<"a">>, <<"_rev">> := Rd,
                                  <<"_deleted">> := true}}, A),
    ?assertMatch(#{<<"id">> := <<"b">>, <<"rev">> := <<"1-ffffffff">>,
                   <<"changes">> := [<<"1-ffffffff">>],
                   <<"doc">> := #{<<"k">> := 2}}, Bc),
    {ok, [_, #{<<"changes">> := All}], 4} = barrel:changes(B, 0, #{style => all_docs}),
    ?assertEqual([<<"1-ffffffff">>, Rb], All).

filters() ->
    {_, B} = barrel_test_setup:fresh_barrel(<<"ch">>),
    save(B, #{<<"id">> => <<"u1">>, <<"type">> => <<"User">>,
              <<"locations">> => [#{<<"country">> => <<"France">>}]}),
    save(B, #{<<"id">> => <<"o1">>, <<"type">> => <<"order">>, <<"n">> => 3}),
    save(B, #{<<"id">> => <<"u2">>, <<"type">> => <<"user">>}),
    F = fun(Filter) ->
                {ok, C, 3} = barrel:changes(B, 0, #{filter => Filter}),
                [Id || {Id, _} <- ids(C)]
        end,
    ?assertEqual([<<"u1">>, <<"u2">>], F(<<"/type/user">>)),
    ?assertEqual([<<"u1">>], F([<<"/locations/+/country/france">>])),
    ?assertEqual([<<"o1">>], F([<<"$/n/3.0">>])),
    ?assertEqual([<<"o1">>, <<"u2">>], F([<<"/id/o1">>, <<"/id/u2">>])),
    ?assertEqual([<<"u1">>, <<"o1">>, <<"u2">>], F([<<"/*">>])),
    ?assertEqual([<<"u1">>], F([<<"/locations/#">>])),
    ?assertEqual([], F([<<"/type/admin">>])).

snapshot() ->
    {_, B} = barrel_test_setup:fresh_barrel(<<"ch">>),
    [save(B, #{<<"id">> => integer_to_binary(I)}) || I <- lists:seq(1, 300)],
    %% Writes made while folding (past the first chunk) are not seen.
    {ok, N, 300} = barrel:fold_changes(
                     B, 0,
                     fun(#{<<"seq">> := S}, Acc) ->
                             save(B, #{<<"id">> => <<"new-", (integer_to_binary(S))/binary>>}),
                             {ok, Acc + 1}
                     end, 0, #{}),
    ?assertEqual(300, N),
    {ok, _, 600} = barrel:changes(B, 0, #{}).

bad_arguments() ->
    {_, B} = barrel_test_setup:fresh_barrel(<<"ch">>),
    ?assertEqual({error, {bad_arg, since}}, barrel:changes(B, -1, #{})),
    ?assertEqual({error, {bad_arg, since}}, barrel:changes(B, <<"0">>, #{})),
    ?assertEqual({error, {bad_option, {style, other}}}, barrel:changes(B, 0, #{style => other})),
    ?assertEqual({error, {bad_option, {bogus, 1}}}, barrel:changes(B, 0, #{bogus => 1})),
    ?assertEqual({error, {bad_option, {filter, [a]}}}, barrel:changes(B, 0, #{filter => [a]})),
    ?assertEqual({error, {bad_pattern, <<"type">>}}, barrel:changes(B, 0, #{filter => <<"type">>})),
    ?assertEqual({error, {bad_pattern, <<"/a/#/b">>}},
                 barrel:changes(B, 0, #{filter => [<<"/a/#/b">>]})),
    ?assertEqual({error, {bad_arg, barrel}}, barrel:changes(not_a_barrel, 0, #{})),
    ?assertEqual({error, {bad_arg, fold_fun}}, barrel:fold_changes(B, 0, nofun, 0, #{})),
    ?assertEqual({error, {bad_option, bad}}, barrel:fold_changes(B, 0, fun(_, A) -> A end, 0, bad)),
    {Name, B2} = barrel_test_setup:fresh_barrel(<<"ch">>),
    ok = barrel:delete_barrel(Name),
    ?assertEqual({error, not_found}, barrel:changes(B2, 0, #{})).

fold_stop() ->
    {_, B} = barrel_test_setup:fresh_barrel(<<"ch">>),
    [save(B, #{<<"id">> => integer_to_binary(I)}) || I <- lists:seq(1, 10)],
    ?assertEqual({ok, 4, 4},
                 barrel:fold_changes(B, 0, fun(_, 3) -> {stop, 4}; (_, N) -> {ok, N + 1} end,
                                     0, #{})),
    ?assertEqual({ok, 0, 1}, barrel:fold_changes(B, 0, fun(_, _) -> stop end, 0, #{})).

%% Sequences survive a restart of the application (and so of the store).
restart_test() ->
    Dir = barrel_test_setup:start(),
    try
        ok = barrel:create_barrel(<<"r">>, #{}),
        {ok, B} = barrel:open(<<"r">>),
        save(B, #{<<"id">> => <<"x">>}),
        save(B, #{<<"id">> => <<"y">>}),
        ok = application:stop(barrel),
        {ok, _} = application:ensure_all_started(barrel),
        {ok, B2} = barrel:open(<<"r">>),
        save(B2, #{<<"id">> => <<"z">>}),
        {ok, C, 3} = barrel:changes(B2, 0, #{}),
        ?assertEqual([{<<"x">>, 1}, {<<"y">>, 2}, {<<"z">>, 3}], ids(C))
    after
        barrel_test_setup:stop(Dir)
    end.
