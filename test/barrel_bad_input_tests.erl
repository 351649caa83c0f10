%% Bad input: every refusal is a clear {error, Reason} and changes nothing.
-module(barrel_bad_input_tests).
-include_lib("eunit/include/eunit.hrl").

bad_input_test_() ->
    {setup, fun barrel_test_setup:start/0, fun barrel_test_setup:stop/1,
     [fun non_map_docs/0,
      fun keys_must_be_binaries/0,
      fun values_must_be_json/0,
      fun invalid_ids/0,
      fun malformed_revs/0,
      fun reserved_and_special_members/0,
      fun too_deep/0,
      fun bad_handles/0,
      fun improper_lists/0,
      fun bad_options/0,
      fun refusals_change_nothing/0]}.

with_barrel(Fun) ->
    {_, B} = barrel_test_setup:fresh_barrel("bad"),
    Fun(B).

non_map_docs() ->
    with_barrel(fun(B) ->
        ?assertEqual({error, {bad_doc, not_a_map}}, barrel:save_doc(B, [1, 2])),
        ?assertEqual({error, {bad_doc, not_a_map}}, barrel:save_doc(B, <<"{}">>)),
        ?assertEqual({error, {bad_doc, not_a_map}}, barrel:save_doc(B, 42))
    end).

keys_must_be_binaries() ->
    with_barrel(fun(B) ->
        ?assertEqual({error, {bad_doc, {invalid_key, <<"/a">>}}}, barrel:save_doc(B, #{a => 1})),
        ?assertEqual({error, {bad_doc, {invalid_key, <<"/x/1">>}}},
                     barrel:save_doc(B, #{<<"x">> => #{1 => 2}})),
        ?assertMatch({error, {bad_doc, {invalid_key, _}}},
                     barrel:save_doc(B, #{<<255>> => 1}))
    end).

values_must_be_json() ->
    with_barrel(fun(B) ->
        Bad = [self(), make_ref(), fun() -> ok end, {1, 2}, some_atom, <<255, 0>>,
               1 bsl 70, [1 | 2], hd(erlang:ports())],
        [?assertEqual({error, {bad_doc, {invalid_value, <<"/v">>}}},
                      barrel:save_doc(B, #{<<"v">> => V})) || V <- Bad],
        ?assertEqual({error, {bad_doc, {invalid_value, <<"/l/1/k">>}}},
                     barrel:save_doc(B, #{<<"l">> => [1, #{<<"k">> => {t}}]})),
        ?assertEqual({error, {bad_doc, {invalid_value, <<"/a~1b">>}}},
                     barrel:save_doc(B, #{<<"a/b">> => self()}))
    end).

invalid_ids() ->
    with_barrel(fun(B) ->
        ?assertEqual({error, {invalid_doc_id, <<>>}}, barrel:save_doc(B, #{<<"id">> => <<>>})),
        ?assertEqual({error, {invalid_doc_id, <<"_design">>}},
                     barrel:save_doc(B, #{<<"id">> => <<"_design">>})),
        ?assertEqual({error, {invalid_doc_id, 1}}, barrel:save_doc(B, #{<<"id">> => 1})),
        ?assertEqual({error, {invalid_doc_id, <<255>>}}, barrel:save_doc(B, #{<<"id">> => <<255>>})),
        ?assertEqual({error, {invalid_doc_id, <<255>>}}, barrel:fetch_doc(B, <<255>>)),
        ?assertEqual({error, {invalid_doc_id, <<"_a">>}}, barrel:fetch_doc(B, <<"_a">>)),
        ?assertEqual({error, {invalid_doc_id, <<>>}}, barrel:fetch_doc(B, <<>>, #{open_revs => all})),
        Long = binary:copy(<<"x">>, 1025),
        ?assertEqual({error, {invalid_doc_id, Long}}, barrel:save_doc(B, #{<<"id">> => Long})),
        ?assertEqual({error, {invalid_doc_id, <<"a", 0>>}},
                     barrel:save_doc(B, #{<<"id">> => <<"a", 0>>})),
        ?assertEqual({error, {invalid_doc_id, 123}}, barrel:fetch_doc(B, 123)),
        ?assertMatch({error, {invalid_doc_id, _}}, barrel:delete_doc(B, <<>>, <<"1-a">>))
    end).

malformed_revs() ->
    with_barrel(fun(B) ->
        [?assertEqual({error, {bad_rev, R}}, barrel:save_doc(B, #{<<"_rev">> => R}))
         || R <- [<<"1">>, <<"x-abc">>, <<"0-abc">>, <<"1-xyz">>, <<"1-">>, <<>>]],
        ?assertEqual({error, {bad_rev, 5}}, barrel:save_doc(B, #{<<"_rev">> => 5})),
        ?assertEqual({error, {bad_rev, not_a_rev}}, barrel:delete_doc(B, <<"a">>, not_a_rev)),
        ?assertMatch({error, {bad_doc, {bad_revisions, _}}},
                     barrel:save_doc(B, #{<<"_rev">> => <<"2-b">>,
                                          <<"_revisions">> => #{<<"start">> => 2,
                                                                <<"ids">> => [<<"c">>]}},
                                     #{new_edits => false})),
        ?assertMatch({error, {bad_doc, {bad_revisions, _}}},
                     barrel:save_doc(B, #{<<"_rev">> => <<"1-b">>,
                                          <<"_revisions">> => <<"nope">>},
                                     #{new_edits => false}))
    end).

reserved_and_special_members() ->
    with_barrel(fun(B) ->
        ?assertEqual({error, {bad_doc, {reserved_field, <<"_secret">>}}},
                     barrel:save_doc(B, #{<<"_secret">> => 1})),
        ?assertEqual({error, {bad_doc, bad_deleted}},
                     barrel:save_doc(B, #{<<"_deleted">> => <<"yes">>}))
    end).

too_deep() ->
    with_barrel(fun(B) ->
        Deep = lists:foldl(fun(_, Acc) -> [Acc] end, 1, lists:seq(1, 200)),
        ?assertMatch({error, {bad_doc, {too_large, _}}}, barrel:save_doc(B, #{<<"d">> => Deep})),
        Ok = lists:foldl(fun(_, Acc) -> [Acc] end, 1, lists:seq(1, 100)),
        ?assertMatch({ok, _, _}, barrel:save_doc(B, #{<<"d">> => Ok}))
    end).

bad_handles() ->
    ?assertEqual({error, {bad_arg, barrel}}, barrel:save_doc(not_a_barrel, #{})),
    ?assertEqual({error, {bad_arg, barrel}}, barrel:fetch_doc(make_ref(), <<"a">>)),
    ?assertEqual({error, {bad_arg, barrel}}, barrel:delete_doc(self(), <<"a">>, <<"1-a">>)),
    ?assertEqual({error, {bad_arg, barrel}}, barrel:close(x)),
    ?assertEqual({error, {bad_arg, barrel}},
                 barrel:fold_docs(x, fun(_, A) -> {ok, A} end, 0, #{})),
    ?assertEqual({error, {bad_arg, barrel_or_docs}}, barrel:save_docs(x, [#{}])).

improper_lists() ->
    with_barrel(fun(B) ->
        ?assertEqual({error, {bad_arg, docs}}, barrel:save_docs(B, [#{} | x])),
        ?assertEqual({error, {bad_option, {open_revs, [<<"1-a">> | x]}}},
                     barrel:fetch_doc(B, <<"a">>, #{open_revs => [<<"1-a">> | x]})),
        ?assertEqual({error, {bad_doc, {invalid_value, <<"/l">>}}},
                     barrel:save_doc(B, #{<<"l">> => [1 | 2]})),
        %% Straight to the NIF: badarg, not a panic.
        ?assertError(badarg, barrel_nif:save_docs(B, [#{} | x], true))
    end).

bad_options() ->
    with_barrel(fun(B) ->
        ?assertEqual({error, {bad_option, {new_edits, maybe}}},
                     barrel:save_doc(B, #{}, #{new_edits => maybe})),
        ?assertEqual({error, {bad_option, {colour, red}}},
                     barrel:save_doc(B, #{}, #{colour => red})),
        ?assertEqual({error, {bad_option, [new_edits]}}, barrel:save_doc(B, #{}, [new_edits])),
        ?assertEqual({error, {bad_option, {limit, -1}}},
                     barrel:fold_docs(B, fun(_, A) -> {ok, A} end, 0, #{limit => -1})),
        ?assertEqual({error, {bad_arg, fold_fun}}, barrel:fold_docs(B, not_fun, 0, #{}))
    end).

refusals_change_nothing() ->
    with_barrel(fun(B) ->
        {ok, Id, Rev} = barrel:save_doc(B, #{<<"v">> => 1}),
        {ok, Before} = barrel:barrel_infos(B),
        [{error, _} = barrel:save_doc(B, Doc) ||
            Doc <- [#{<<"id">> => Id, <<"_rev">> => Rev, <<"v">> => self()},
                    #{<<"id">> => Id, <<"_rev">> => <<"bad">>},
                    #{<<"id">> => Id},
                    #{<<"id">> => Id, <<"_rev">> => Rev, <<"_x">> => 1}]],
        ?assertEqual({ok, Before}, barrel:barrel_infos(B)),
        ?assertEqual({ok, #{<<"id">> => Id, <<"_rev">> => Rev, <<"v">> => 1}},
                     barrel:fetch_doc(B, Id))
    end).
