%% Path index and queries: every query form, updates, deletes, conflicts,
%% reindex, snapshots and bad queries.
-module(barrel_query_tests).
-include_lib("eunit/include/eunit.hrl").

query_test_() ->
    {setup, fun barrel_test_setup:start/0, fun barrel_test_setup:stop/1,
     [fun talk_example/0,
      fun equality_is_case_insensitive_and_keeps_the_doc/0,
      fun numbers_sort_numerically/0,
      fun ranges/0,
      fun type_order/0,
      fun prefix/0,
      fun unicode_strings/0,
      fun nested_arrays_and_wildcards/0,
      fun list_paths/0,
      fun limit_descending_and_rows/0,
      fun early_stop/0,
      fun updates_and_deletes_follow_the_winner/0,
      fun conflicts_index_the_winner_only/0,
      fun reindex_gives_the_same_answers/0,
      fun a_query_reads_one_snapshot/0,
      fun limits/0,
      fun bad_queries/0]}.

ids(B, Path, Opts) ->
    {ok, Rows} = barrel:find(B, {Path, Opts}, #{include_docs => false}),
    [Id || #{<<"id">> := Id} <- Rows].

company(B) ->
    {_, _} = {barrel:save_doc(B, #{<<"id">> => <<"ID">>,
                                   <<"locations">> => [#{<<"country">> => <<"France">>,
                                                         <<"city">> => <<"creil">>}],
                                   <<"headquarter">> => <<"France">>}), ok}.

talk_example() ->
    {_, B} = barrel_test_setup:fresh_barrel("talk-q"),
    company(B),
    [?assertMatch({ok, [#{<<"id">> := <<"ID">>}]}, barrel:find(B, Q))
     || Q <- [<<"$/id/ID">>, <<"$/locations/0/country/france">>,
              <<"$/locations/0/city/creil">>, <<"$/headquarter/france">>]],
    ?assertEqual({ok, []}, barrel:find(B, <<"$/headquarter/spain">>)),
    ?assertEqual({ok, []}, barrel:find(B, <<"$/locations/1/country/france">>)).

equality_is_case_insensitive_and_keeps_the_doc() ->
    {_, B} = barrel_test_setup:fresh_barrel("eq"),
    company(B),
    {ok, [Doc]} = barrel:find(B, {<<"$/headquarter">>, #{equal => <<"FRANCE">>}}),
    ?assertMatch(#{<<"headquarter">> := <<"France">>, <<"_rev">> := <<"1-", _/binary>>}, Doc),
    ?assertEqual({ok, [#{<<"id">> => <<"ID">>, <<"value">> => <<"france">>}]},
                 barrel:find(B, {<<"$/headquarter">>, #{equal => <<"France">>}},
                             #{include_docs => false})).

numbers_sort_numerically() ->
    {_, B} = barrel_test_setup:fresh_barrel("num"),
    Ages = [{<<"a">>, 10}, {<<"b">>, 9.5}, {<<"c">>, -3}, {<<"d">>, 100}, {<<"e">>, 10.0},
            {<<"f">>, 18446744073709551615}, {<<"g">>, -1.0e30}],
    [{ok, _, _} = barrel:save_doc(B, #{<<"id">> => Id, <<"age">> => Age}) || {Id, Age} <- Ages],
    ?assertEqual([<<"g">>, <<"c">>, <<"b">>, <<"a">>, <<"e">>, <<"d">>, <<"f">>],
                 ids(B, <<"$/age">>, #{})),
    %% 10 and 10.0 are the same indexed value.
    ?assertEqual([<<"a">>, <<"e">>], ids(B, <<"$/age">>, #{equal => 10})),
    ?assertEqual([<<"a">>, <<"e">>], ids(B, <<"$/age">>, #{equal => 10.0})),
    {ok, [#{<<"id">> := <<"a">>}]} = barrel:find(B, <<"$/age/10">>, #{limit => 1}).

ranges() ->
    {_, B} = barrel_test_setup:fresh_barrel("range"),
    [{ok, _, _} = barrel:save_doc(B, #{<<"id">> => integer_to_binary(N), <<"n">> => N})
     || N <- lists:seq(1, 9)],
    ?assertEqual([<<"3">>, <<"4">>, <<"5">>], ids(B, <<"$/n">>, #{start_at => 3, end_at => 5})),
    ?assertEqual([<<"4">>], ids(B, <<"$/n">>, #{start_at => 3, end_at => 5,
                                                 start_inclusive => false,
                                                 end_inclusive => false})),
    ?assertEqual([<<"8">>, <<"9">>], ids(B, <<"$/n">>, #{start_at => 7.5})),
    ?assertEqual([<<"1">>], ids(B, <<"$/n">>, #{end_at => 2, end_inclusive => false})),
    ?assertEqual([], ids(B, <<"$/n">>, #{start_at => 5, end_at => 3})).

type_order() ->
    {_, B} = barrel_test_setup:fresh_barrel("types"),
    Vals = [{<<"s">>, <<"text">>}, {<<"n">>, 1}, {<<"t">>, true}, {<<"f">>, false},
            {<<"z">>, null}],
    [{ok, _, _} = barrel:save_doc(B, #{<<"id">> => Id, <<"v">> => V}) || {Id, V} <- Vals],
    ?assertEqual([<<"z">>, <<"f">>, <<"t">>, <<"n">>, <<"s">>], ids(B, <<"$/v">>, #{})),
    ?assertEqual([<<"z">>], ids(B, <<"$/v">>, #{equal => null})),
    ?assertEqual([<<"z">>], ids(B, <<"$/v">>, #{equal => nil})),
    ?assertEqual([<<"t">>], ids(B, <<"$/v">>, #{equal => true})),
    %% A range of numbers does not reach strings or booleans.
    ?assertEqual([<<"n">>], ids(B, <<"$/v">>, #{start_at => -100, end_at => 100})),
    {ok, [#{<<"id">> := <<"z">>}]} = barrel:find(B, <<"$/v/null">>),
    {ok, [#{<<"id">> := <<"f">>}]} = barrel:find(B, <<"$/v/false">>),
    {ok, [#{<<"id">> := <<"n">>}]} = barrel:find(B, <<"$/v/1">>).

prefix() ->
    {_, B} = barrel_test_setup:fresh_barrel("prefix"),
    [{ok, _, _} = barrel:save_doc(B, #{<<"id">> => Id, <<"name">> => Name})
     || {Id, Name} <- [{<<"1">>, <<"Frank">>}, {<<"2">>, <<"fred">>}, {<<"3">>, <<"Alice">>},
                       {<<"4">>, <<"fr">>}, {<<"5">>, 42}]],
    ?assertEqual([<<"4">>, <<"1">>, <<"2">>], ids(B, <<"$/name">>, #{prefix => <<"FR">>})),
    ?assertEqual([<<"3">>, <<"4">>, <<"1">>, <<"2">>], ids(B, <<"$/name">>, #{prefix => <<>>})).

unicode_strings() ->
    {_, B} = barrel_test_setup:fresh_barrel("unicode"),
    {ok, _, _} = barrel:save_doc(B, #{<<"id">> => <<"u">>, <<"season">> => <<"Été"/utf8>>,
                                      <<"city">> => <<"Zürich"/utf8>>}),
    ?assertEqual([<<"u">>], ids(B, <<"$/season">>, #{equal => <<"été"/utf8>>})),
    ?assertEqual([<<"u">>], ids(B, <<"$/city">>, #{prefix => <<"zü"/utf8>>})),
    {ok, [_]} = barrel:find(B, <<"$/season/ÉTÉ"/utf8>>).

nested_arrays_and_wildcards() ->
    {_, B} = barrel_test_setup:fresh_barrel("nested"),
    {ok, _, _} = barrel:save_doc(B, #{<<"id">> => <<"m">>,
                                      <<"grid">> => [[1, 2], [3, 4]],
                                      <<"tags">> => [<<"x">>, <<"y">>, <<"x">>]}),
    {ok, _, _} = barrel:save_doc(B, #{<<"id">> => <<"n">>, <<"tags">> => [<<"y">>]}),
    ?assertEqual([<<"m">>], ids(B, <<"$/grid/1/0">>, #{equal => 3})),
    ?assertEqual([<<"m">>], ids(B, <<"$/grid/*/1">>, #{equal => 4})),
    ?assertEqual([<<"m">>], ids(B, <<"$/grid/*/*">>, #{start_at => 2})),
    %% A document matches once even when several elements match.
    ?assertEqual([<<"m">>], ids(B, <<"$/tags/*">>, #{equal => <<"x">>})),
    %% With `*`, index order is array position first: n has "y" at 0, m at 1.
    ?assertEqual([<<"n">>, <<"m">>], ids(B, <<"$/tags/*">>, #{equal => <<"y">>})),
    ?assertEqual([<<"n">>], ids(B, <<"$/tags/0">>, #{equal => <<"y">>})),
    %% An array holds no scalar itself.
    ?assertEqual([], ids(B, <<"$/tags">>, #{})).

list_paths() ->
    {_, B} = barrel_test_setup:fresh_barrel("lists"),
    company(B),
    ?assertEqual([<<"ID">>], ids(B, [<<"locations">>, 0, <<"country">>], #{equal => <<"france">>})),
    ?assertEqual([<<"ID">>], ids(B, [<<"locations">>, '*', <<"city">>], #{})),
    {ok, _, _} = barrel:save_doc(B, #{<<"id">> => <<"slash">>, <<"a/b">> => 1}),
    ?assertEqual([<<"slash">>], ids(B, [<<"a/b">>], #{})),
    ?assertEqual([<<"slash">>], ids(B, <<"$/a~1b">>, #{})).

limit_descending_and_rows() ->
    {_, B} = barrel_test_setup:fresh_barrel("limit"),
    [{ok, _, _} = barrel:save_doc(B, #{<<"id">> => integer_to_binary(N), <<"n">> => N,
                                       <<"x">> => null})
     || N <- lists:seq(1, 600)],
    All = ids(B, <<"$/n">>, #{}),
    ?assertEqual(600, length(All)),
    ?assertEqual(lists:reverse(All), ids(B, <<"$/n">>, #{descending => true})),
    ?assertEqual(lists:sublist(All, 300), ids(B, <<"$/n">>, #{limit => 300})),
    ?assertEqual([<<"600">>, <<"599">>], ids(B, <<"$/n">>, #{limit => 2, descending => true})),
    ?assertEqual([], ids(B, <<"$/n">>, #{limit => 0})),
    {ok, [Doc]} = barrel:find(B, {<<"$/n">>, #{equal => 7}}, #{null => nil}),
    ?assertMatch(#{<<"x">> := nil, <<"n">> := 7}, Doc).

early_stop() ->
    {_, B} = barrel_test_setup:fresh_barrel("stop"),
    [{ok, _, _} = barrel:save_doc(B, #{<<"n">> => N}) || N <- lists:seq(1, 10)],
    ?assertEqual({ok, 3}, barrel:query(B, <<"$/n">>, fun(_, 3) -> {stop, 3};
                                                        (_, A) -> {ok, A + 1} end, 0, #{})),
    ?assertEqual({ok, 0}, barrel:query(B, <<"$/n">>, fun(_, _) -> stop end, 0, #{})).

updates_and_deletes_follow_the_winner() ->
    {_, B} = barrel_test_setup:fresh_barrel("upd"),
    {ok, Id, R1} = barrel:save_doc(B, #{<<"color">> => <<"red">>, <<"size">> => 1}),
    {ok, Id, R2} = barrel:save_doc(B, #{<<"id">> => Id, <<"_rev">> => R1,
                                        <<"color">> => <<"blue">>}),
    ?assertEqual([], ids(B, <<"$/color">>, #{equal => <<"red">>})),
    ?assertEqual([Id], ids(B, <<"$/color">>, #{equal => <<"blue">>})),
    %% The removed path is gone from the index.
    ?assertEqual([], ids(B, <<"$/size">>, #{})),
    {ok, Id, _} = barrel:delete_doc(B, Id, R2),
    ?assertEqual([], ids(B, <<"$/color">>, #{})),
    ?assertEqual([], ids(B, <<"$/id">>, #{})),
    %% Recreated, it is indexed again.
    {ok, Id, _} = barrel:save_doc(B, #{<<"id">> => Id, <<"color">> => <<"green">>}),
    ?assertEqual([Id], ids(B, <<"$/color">>, #{})).

conflicts_index_the_winner_only() ->
    {_, B} = barrel_test_setup:fresh_barrel("confl"),
    Rev = fun(H, C) -> #{<<"id">> => <<"c">>, <<"_rev">> => <<"2-", H/binary>>,
                         <<"color">> => C,
                         <<"_revisions">> => #{<<"start">> => 2, <<"ids">> => [H, <<"aa">>]}}
          end,
    {ok, _} = barrel:save_docs(B, [Rev(<<"bb">>, <<"red">>), Rev(<<"cc">>, <<"blue">>)],
                               #{new_edits => false}),
    %% 2-cc wins: only its value is indexed.
    ?assertEqual([<<"c">>], ids(B, <<"$/color">>, #{equal => <<"blue">>})),
    ?assertEqual([], ids(B, <<"$/color">>, #{equal => <<"red">>})),
    %% Deleting the winner makes the other branch win, and the index follows.
    {ok, _, _} = barrel:delete_doc(B, <<"c">>, <<"2-cc">>),
    ?assertEqual([<<"c">>], ids(B, <<"$/color">>, #{equal => <<"red">>})),
    ?assertEqual([], ids(B, <<"$/color">>, #{equal => <<"blue">>})).

reindex_gives_the_same_answers() ->
    {_, B} = barrel_test_setup:fresh_barrel("reidx"),
    [{ok, _, _} = barrel:save_doc(B, #{<<"n">> => N rem 7, <<"s">> => integer_to_binary(N)})
     || N <- lists:seq(1, 1500)],
    {ok, _, R} = barrel:save_doc(B, #{<<"id">> => <<"gone">>, <<"n">> => 1}),
    {ok, _, _} = barrel:delete_doc(B, <<"gone">>, R),
    Before = [ids(B, P, O) || {P, O} <- [{<<"$/n">>, #{}}, {<<"$/s">>, #{prefix => <<"1">>}},
                                         {<<"$/id">>, #{descending => true}}]],
    ?assertEqual({ok, 1500}, barrel:reindex(B)),
    After = [ids(B, P, O) || {P, O} <- [{<<"$/n">>, #{}}, {<<"$/s">>, #{prefix => <<"1">>}},
                                        {<<"$/id">>, #{descending => true}}]],
    ?assertEqual(Before, After),
    ?assertEqual(1500, length(hd(After))).

a_query_reads_one_snapshot() ->
    {_, B} = barrel_test_setup:fresh_barrel("snap"),
    [{ok, _, _} = barrel:save_doc(B, #{<<"id">> => integer_to_binary(1000 + N), <<"n">> => N})
     || N <- lists:seq(1, 600)],
    %% Writers change and add documents while the query folds: it still sees
    %% exactly the 600 documents as they were when it started.
    {ok, Seen} = barrel:query(B, <<"$/n">>,
                              fun(#{<<"id">> := Id, <<"_rev">> := Rev, <<"n">> := N}, Acc) ->
                                      _ = barrel:save_doc(B, #{<<"id">> => Id, <<"_rev">> => Rev,
                                                               <<"n">> => N + 1000}),
                                      {ok, _, _} = barrel:save_doc(B, #{<<"n">> => -N}),
                                      {ok, [N | Acc]}
                              end, [], #{}),
    ?assertEqual(lists:seq(1, 600), lists:reverse(Seen)),
    ?assertEqual(1200, length(ids(B, <<"$/n">>, #{}))).

limits() ->
    {_, B} = barrel_test_setup:fresh_barrel("limits"),
    Long = binary:copy(<<"a">>, 257),
    {ok, _, _} = barrel:save_doc(B, #{<<"id">> => <<"l">>, <<"long">> => Long,
                                      <<"short">> => binary:copy(<<"a">>, 256)}),
    ?assertEqual([], ids(B, <<"$/long">>, #{})),
    ?assertEqual([<<"l">>], ids(B, <<"$/short">>, #{})),
    Many = lists:seq(1, 10001),
    ?assertMatch({error, {bad_doc, {too_large, _}}}, barrel:save_doc(B, #{<<"many">> => Many})).

bad_queries() ->
    {Name, B} = barrel_test_setup:fresh_barrel("badq"),
    Fun = fun(_, A) -> {ok, A} end,
    ?assertMatch({error, {bad_query, _}}, barrel:query(B, <<"$//x">>, Fun, 0, #{})),
    ?assertMatch({error, {bad_query, _}}, barrel:query(B, [<<"a">>, -1], Fun, 0, #{})),
    ?assertMatch({error, {bad_query, _}}, barrel:query(B, [<<"a">> | x], Fun, 0, #{})),
    ?assertMatch({error, {bad_query, _}}, barrel:query(B, 42, Fun, 0, #{})),
    ?assertMatch({error, {bad_query, _}}, barrel:query(B, <<"$">>, Fun, 0, #{})),
    ?assertMatch({error, {bad_query, _}}, barrel:query(B, [], Fun, 0, #{})),
    ?assertMatch({error, {bad_query, _}}, barrel:find(B, <<"$/n">>)),
    ?assertMatch({error, {bad_query, _}}, barrel:query(B, <<"$/a">>, Fun, 0,
                                                       #{equal => 1, start_at => 0})),
    ?assertEqual({error, {bad_option, {equal, [1]}}},
                 barrel:query(B, <<"$/a">>, Fun, 0, #{equal => [1]})),
    ?assertEqual({error, {bad_option, {limit, -1}}},
                 barrel:query(B, <<"$/a">>, Fun, 0, #{limit => -1})),
    ?assertEqual({error, {bad_option, {colour, red}}},
                 barrel:query(B, <<"$/a">>, Fun, 0, #{colour => red})),
    ?assertEqual({error, {bad_option, []}}, barrel:query(B, <<"$/a">>, Fun, 0, [])),
    ?assertEqual({error, {bad_arg, fold_fun}}, barrel:query(B, <<"$/a">>, x, 0, #{})),
    ?assertMatch({error, {bad_query, _}}, barrel:find(B, <<"no-value">>)),
    ?assertMatch({error, {bad_query, _}}, barrel:find(B, <<"$/a/1">>, #{equal => 1})),
    ?assertEqual({error, {bad_query, 42}}, barrel:find(B, 42)),
    ?assertEqual({error, {bad_arg, barrel}}, barrel:find(x, <<"$/a/1">>)),
    ?assertEqual({error, {bad_arg, barrel}}, barrel:reindex(x)),
    ok = barrel:delete_barrel(Name),
    ?assertEqual({error, not_found}, barrel:find(B, <<"$/a/1">>)),
    ?assertEqual({error, not_found}, barrel:reindex(B)).
