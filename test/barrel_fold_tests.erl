%% fold_docs: id order, ranges, limit, include_docs, early stop.
-module(barrel_fold_tests).
-include_lib("eunit/include/eunit.hrl").

fold_test_() ->
    {setup,
     fun() ->
             Dir = barrel_test_setup:start(),
             {_, B} = barrel_test_setup:fresh_barrel("fold"),
             Ids = [iolist_to_binary(io_lib:format("doc~4..0B", [N])) || N <- lists:seq(1, 600)],
             {ok, _} = barrel:save_docs(B, [#{<<"id">> => Id, <<"n">> => null} || Id <- Ids]),
             {ok, _, R} = barrel:save_doc(B, #{<<"id">> => <<"gone">>}),
             {ok, _, _} = barrel:delete_doc(B, <<"gone">>, R),
             {Dir, B, Ids}
     end,
     fun({Dir, _, _}) -> barrel_test_setup:stop(Dir) end,
     fun({_, B, Ids}) ->
             [?_test(all_in_order(B, Ids)),
              ?_test(ranges(B)),
              ?_test(limit(B, Ids)),
              ?_test(without_docs(B)),
              ?_test(early_stop(B)),
              ?_test(null_option(B)),
              ?_test(empty_barrel())]
     end}.

ids(B, Opts) ->
    {ok, Acc} = barrel:fold_docs(B, fun(#{<<"id">> := Id}, A) -> {ok, [Id | A]} end, [], Opts),
    lists:reverse(Acc).

all_in_order(B, Ids) ->
    %% More than one chunk (256) and the deleted doc skipped.
    ?assertEqual(Ids, ids(B, #{})).

ranges(B) ->
    ?assertEqual([<<"doc0010">>, <<"doc0011">>, <<"doc0012">>],
                 ids(B, #{start_key => <<"doc0010">>, end_key => <<"doc0012">>})),
    ?assertEqual([<<"doc0010">>, <<"doc0011">>],
                 ids(B, #{start_key => <<"doc0010">>, end_key => <<"doc0012">>,
                          inclusive_end => false})),
    ?assertEqual([<<"doc0599">>, <<"doc0600">>], ids(B, #{start_key => <<"doc0599">>})),
    ?assertEqual([], ids(B, #{start_key => <<"z">>})),
    ?assertEqual([<<"doc0001">>], ids(B, #{end_key => <<"doc0001">>})).

limit(B, Ids) ->
    ?assertEqual(lists:sublist(Ids, 300), ids(B, #{limit => 300})),
    ?assertEqual([], ids(B, #{limit => 0})),
    ?assertEqual(Ids, ids(B, #{limit => 10000})).

without_docs(B) ->
    {ok, [Row | _]} = barrel:fold_docs(B, fun(D, A) -> {ok, [D | A]} end, [],
                                       #{include_docs => false, limit => 1}),
    ?assertMatch(#{<<"id">> := <<"doc0001">>, <<"_rev">> := <<"1-", _/binary>>}, Row),
    ?assertEqual(2, map_size(Row)).

early_stop(B) ->
    ?assertEqual({ok, 3}, barrel:fold_docs(B, fun(_, 3) -> {stop, 3}; (_, N) -> {ok, N + 1} end,
                                           0, #{})),
    ?assertEqual({ok, 5}, barrel:fold_docs(B, fun(_, 5) -> stop; (_, N) -> {ok, N + 1} end,
                                           0, #{})).

null_option(B) ->
    {ok, [D]} = barrel:fold_docs(B, fun(D, A) -> {ok, [D | A]} end, [],
                                 #{limit => 1, null => nil}),
    ?assertMatch(#{<<"n">> := nil}, D).

empty_barrel() ->
    {_, E} = barrel_test_setup:fresh_barrel("empty"),
    ?assertEqual({ok, none}, barrel:fold_docs(E, fun(_, _) -> {ok, some} end, none, #{})).
