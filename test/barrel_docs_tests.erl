%% Documents and revisions: save, fetch (with options), update, conflicts,
%% delete, save_docs, new_edits => false.
-module(barrel_docs_tests).
-include_lib("eunit/include/eunit.hrl").

docs_test_() ->
    {setup, fun barrel_test_setup:start/0, fun barrel_test_setup:stop/1,
     [fun save_then_fetch/0,
      fun talk_contract/0,
      fun generated_ids_are_unique/0,
      fun json_values_round_trip/0,
      fun update_with_rev/0,
      fun save_without_rev_over_live_doc_is_conflict/0,
      fun stale_rev_is_conflict/0,
      fun rev_on_missing_doc_is_conflict/0,
      fun same_edit_same_rev/0,
      fun delete_then_recreate/0,
      fun deleted_flag_in_doc_deletes/0,
      fun concurrent_updates_one_winner/0,
      fun concurrent_creates_all_committed/0,
      fun save_docs_mixed_results/0,
      fun save_docs_is_atomic_per_call/0,
      fun replicated_revisions_make_conflicts/0,
      fun new_edits_false_is_idempotent/0,
      fun fetch_options/0,
      fun open_revs/0,
      fun revs_limit_prunes/0,
      fun fetched_doc_can_be_saved_back/0,
      fun big_documents/0,
      fun writer_dying_does_not_lose_the_write/0]}.

%% Documents too big for the calling scheduler go through the dirty NIFs, for
%% saves, batches and fetches alike.
big_documents() ->
    {_, B} = barrel_test_setup:fresh_barrel("big"),
    Big = binary:copy(<<"0123456789">>, 50000),
    {ok, Id, Rev} = barrel:save_doc(B, #{<<"blob">> => Big}),
    ?assertEqual({ok, #{<<"id">> => Id, <<"_rev">> => Rev, <<"blob">> => Big}},
                 barrel:fetch_doc(B, Id)),
    {ok, [{ok, _, _}, {error, {invalid_doc_id, 7}}, {ok, _, _}]} =
        barrel:save_docs(B, [#{<<"blob">> => Big}, #{<<"id">> => 7}, #{}]),
    {ok, [{ok, <<"x">>, _}, {error, {invalid_doc_id, 7}}]} =
        barrel:save_docs(B, [#{<<"id">> => <<"x">>}, #{<<"id">> => 7}]).

%% A writer killed while its write is queued does not take the write, or the
%% store, down with it.
writer_dying_does_not_lose_the_write() ->
    {Name, B} = barrel_test_setup:fresh_barrel("dying"),
    Pids = [spawn(fun() -> barrel:save_doc(B, #{<<"id">> => integer_to_binary(N)}) end)
            || N <- lists:seq(1, 50)],
    [exit(P, kill) || P <- Pids],
    {ok, Id, _} = barrel:save_doc(B, #{<<"id">> => <<"after">>}),
    ?assertEqual(<<"after">>, Id),
    {ok, #{docs_count := Count}} = barrel:barrel_infos(Name),
    ?assert(Count >= 1 andalso Count =< 51).

save_then_fetch() ->
    {_, B} = barrel_test_setup:fresh_barrel("docs"),
    {ok, <<"a">>, Rev} = barrel:save_doc(B, #{<<"id">> => <<"a">>, <<"k">> => <<"v">>}),
    ?assertMatch(<<"1-", _:32/binary>>, Rev),
    ?assertEqual({ok, #{<<"id">> => <<"a">>, <<"_rev">> => Rev, <<"k">> => <<"v">>}},
                 barrel:fetch_doc(B, <<"a">>)),
    ?assertEqual({error, not_found}, barrel:fetch_doc(B, <<"b">>)).

talk_contract() ->
    {_, Barrel} = barrel_test_setup:fresh_barrel("talk"),
    {ok, DocId, Rev} = barrel:save_doc(Barrel, #{}),
    {ok, Doc = #{<<"id">> := DocId, <<"_rev">> := Rev}} = barrel:fetch_doc(Barrel, DocId),
    ?assertEqual(2, map_size(Doc)).

generated_ids_are_unique() ->
    {_, B} = barrel_test_setup:fresh_barrel("ids"),
    Ids = [begin {ok, Id, _} = barrel:save_doc(B, #{}), Id end || _ <- lists:seq(1, 100)],
    ?assertEqual(100, length(lists:usort(Ids))),
    [?assertEqual(32, byte_size(Id)) || Id <- Ids].

json_values_round_trip() ->
    {_, B} = barrel_test_setup:fresh_barrel("values"),
    Body = #{<<"s">> => <<"héllo ☃"/utf8>>, <<"i">> => -42, <<"big">> => 18446744073709551615,
             <<"f">> => 1.5, <<"t">> => true, <<"n">> => null, <<"l">> => [1, [2, #{}], <<>>],
             <<"m">> => #{<<"nested">> => #{<<"deep">> => [false]}}, <<"empty">> => []},
    %% Stored bodies are decoded by a fast decoder that leaves escaped strings and integers
    %% beyond 64 bits to serde_json: a body each way, the same terms back.
    Fast = #{<<"ints">> => [0, -1, 7, 9223372036854775807, -9223372036854775808],
             <<"floats">> => [1.0, -2.5, 1.0e300, 2.5e-8, 123456.789, -0.5e-300],
             <<"s">> => <<"héllo ☃ 𝄞"/utf8>>, <<>> => <<>>, <<"n">> => null,
             <<"deep">> => [[[#{<<"a">> => [true, false, null, #{}]}]]]},
    Escaped = #{<<"esc \"k\"">> => <<"a\"b\\c\nd\te", 1, 31, "/☃"/utf8>>,
                <<"big">> => [9223372036854775808, 18446744073709551615]},
    [begin
         {ok, Id, Rev} = barrel:save_doc(B, Doc),
         ?assertEqual({ok, Doc#{<<"id">> => Id, <<"_rev">> => Rev}}, barrel:fetch_doc(B, Id))
     end || Doc <- [Fast, Body, Escaped]],
    %% nil (Elixir's null) is stored as null; the null option picks the atom returned.
    {ok, Id2, _} = barrel:save_doc(B, #{<<"x">> => nil}),
    ?assertMatch({ok, #{<<"x">> := null}}, barrel:fetch_doc(B, Id2)),
    ?assertMatch({ok, #{<<"x">> := nil}}, barrel:fetch_doc(B, Id2, #{null => nil})).

update_with_rev() ->
    {_, B} = barrel_test_setup:fresh_barrel("update"),
    {ok, Id, R1} = barrel:save_doc(B, #{<<"v">> => 1}),
    {ok, Id, R2} = barrel:save_doc(B, #{<<"id">> => Id, <<"_rev">> => R1, <<"v">> => 2}),
    ?assertMatch(<<"2-", _/binary>>, R2),
    ?assertEqual({ok, #{<<"id">> => Id, <<"_rev">> => R2, <<"v">> => 2}},
                 barrel:fetch_doc(B, Id)).

save_without_rev_over_live_doc_is_conflict() ->
    {_, B} = barrel_test_setup:fresh_barrel("conflict"),
    {ok, Id, R1} = barrel:save_doc(B, #{<<"v">> => 1}),
    ?assertEqual({error, conflict}, barrel:save_doc(B, #{<<"id">> => Id, <<"v">> => 2})),
    ?assertMatch({ok, #{<<"_rev">> := R1, <<"v">> := 1}}, barrel:fetch_doc(B, Id)).

stale_rev_is_conflict() ->
    {_, B} = barrel_test_setup:fresh_barrel("stale"),
    {ok, Id, R1} = barrel:save_doc(B, #{}),
    {ok, Id, _} = barrel:save_doc(B, #{<<"id">> => Id, <<"_rev">> => R1}),
    ?assertEqual({error, conflict}, barrel:save_doc(B, #{<<"id">> => Id, <<"_rev">> => R1})),
    ?assertEqual({error, conflict}, barrel:delete_doc(B, Id, R1)).

rev_on_missing_doc_is_conflict() ->
    {_, B} = barrel_test_setup:fresh_barrel("missing"),
    ?assertEqual({error, conflict},
                 barrel:save_doc(B, #{<<"id">> => <<"x">>, <<"_rev">> => <<"1-abc">>})),
    ?assertEqual({error, conflict}, barrel:delete_doc(B, <<"x">>, <<"1-abc">>)).

same_edit_same_rev() ->
    {_, B1} = barrel_test_setup:fresh_barrel("det1"),
    {_, B2} = barrel_test_setup:fresh_barrel("det2"),
    Doc = #{<<"id">> => <<"d">>, <<"a">> => [1, 2], <<"b">> => #{<<"c">> => null}},
    {ok, _, R1} = barrel:save_doc(B1, Doc),
    {ok, _, R2} = barrel:save_doc(B2, Doc),
    ?assertEqual(R1, R2),
    {ok, _, R3} = barrel:save_doc(B1, Doc#{<<"_rev">> => R1, <<"a">> => 3}),
    {ok, _, R4} = barrel:save_doc(B2, Doc#{<<"_rev">> => R2, <<"a">> => 3}),
    ?assertEqual(R3, R4).

delete_then_recreate() ->
    {Name, B} = barrel_test_setup:fresh_barrel("delete"),
    {ok, Id, R1} = barrel:save_doc(B, #{<<"v">> => 1}),
    {ok, Id, R2} = barrel:delete_doc(B, Id, R1),
    ?assertMatch(<<"2-", _/binary>>, R2),
    ?assertEqual({error, not_found}, barrel:fetch_doc(B, Id)),
    ?assertEqual({ok, #{<<"id">> => Id, <<"_rev">> => R2, <<"_deleted">> => true}},
                 barrel:fetch_doc(B, Id, #{rev => R2})),
    ?assertMatch({ok, #{docs_count := 0, deleted_count := 1}}, barrel:barrel_infos(Name)),
    {ok, Id, R3} = barrel:save_doc(B, #{<<"id">> => Id, <<"v">> => 2}),
    ?assertMatch(<<"3-", _/binary>>, R3),
    ?assertMatch({ok, #{<<"v">> := 2, <<"_rev">> := R3}}, barrel:fetch_doc(B, Id)),
    ?assertMatch({ok, #{docs_count := 1, deleted_count := 0}}, barrel:barrel_infos(Name)).

deleted_flag_in_doc_deletes() ->
    {_, B} = barrel_test_setup:fresh_barrel("flag"),
    {ok, Id, R1} = barrel:save_doc(B, #{}),
    {ok, Id, _} = barrel:save_doc(B, #{<<"id">> => Id, <<"_rev">> => R1, <<"_deleted">> => true}),
    ?assertEqual({error, not_found}, barrel:fetch_doc(B, Id)).

concurrent_updates_one_winner() ->
    {_, B} = barrel_test_setup:fresh_barrel("race"),
    {ok, Id, R1} = barrel:save_doc(B, #{}),
    Self = self(),
    Pids = [spawn_link(fun() ->
                               Self ! {self(), barrel:save_doc(B, #{<<"id">> => Id, <<"_rev">> => R1,
                                                                   <<"w">> => N})}
                       end) || N <- lists:seq(1, 16)],
    Results = [receive {P, R} -> R end || P <- Pids],
    ?assertEqual(1, length([ok || {ok, _, _} <- Results])),
    ?assertEqual(15, length([c || {error, conflict} <- Results])).

concurrent_creates_all_committed() ->
    {Name, B} = barrel_test_setup:fresh_barrel("many"),
    Self = self(),
    Pids = [spawn_link(fun() ->
                               [{ok, _, _} = barrel:save_doc(B, #{<<"p">> => P, <<"i">> => I})
                                || I <- lists:seq(1, 50)],
                               Self ! {done, self()}
                       end) || P <- lists:seq(1, 16)],
    [receive {done, P} -> ok end || P <- Pids],
    ?assertMatch({ok, #{docs_count := 800, updated_seq := 800}}, barrel:barrel_infos(Name)).

save_docs_mixed_results() ->
    {_, B} = barrel_test_setup:fresh_barrel("bulk"),
    {ok, Results} = barrel:save_docs(B, [#{<<"id">> => <<"a">>},
                                         not_a_map,
                                         #{<<"id">> => <<"a">>},
                                         #{<<"id">> => <<"_bad">>},
                                         #{<<"id">> => <<"b">>}]),
    ?assertMatch([{ok, <<"a">>, _},
                  {error, {bad_doc, not_a_map}},
                  {error, conflict},
                  {error, {invalid_doc_id, <<"_bad">>}},
                  {ok, <<"b">>, _}], Results),
    ?assertEqual({ok, []}, barrel:save_docs(B, [])),
    ?assertEqual({error, {bad_arg, docs}}, barrel:save_docs(B, not_a_list)).

save_docs_is_atomic_per_call() ->
    {Name, B} = barrel_test_setup:fresh_barrel("atomic"),
    Docs = [#{<<"id">> => integer_to_binary(N)} || N <- lists:seq(1, 1000)],
    {ok, Results} = barrel:save_docs(B, Docs),
    ?assertEqual(1000, length([ok || {ok, _, _} <- Results])),
    ?assertMatch({ok, #{docs_count := 1000, updated_seq := 1000}}, barrel:barrel_infos(Name)).

conflicting_pair(B) ->
    Left = #{<<"id">> => <<"c">>, <<"_rev">> => <<"2-bb">>, <<"v">> => <<"left">>,
             <<"_revisions">> => #{<<"start">> => 2, <<"ids">> => [<<"bb">>, <<"aa">>]}},
    Right = #{<<"id">> => <<"c">>, <<"_rev">> => <<"2-cc">>, <<"v">> => <<"right">>,
              <<"_revisions">> => #{<<"start">> => 2, <<"ids">> => [<<"cc">>, <<"aa">>]}},
    {ok, [{ok, <<"c">>, <<"2-bb">>}, {ok, <<"c">>, <<"2-cc">>}]} =
        barrel:save_docs(B, [Left, Right], #{new_edits => false}),
    {Left, Right}.

replicated_revisions_make_conflicts() ->
    {_, B} = barrel_test_setup:fresh_barrel("repl"),
    conflicting_pair(B),
    %% The winner is the highest rev (CouchDB's rule); the other is a conflict.
    ?assertEqual({ok, #{<<"id">> => <<"c">>, <<"_rev">> => <<"2-cc">>, <<"v">> => <<"right">>,
                        <<"_conflicts">> => [<<"2-bb">>]}},
                 barrel:fetch_doc(B, <<"c">>, #{conflicts => true})),
    %% Resolve: delete the losing branch.
    {ok, <<"c">>, _} = barrel:delete_doc(B, <<"c">>, <<"2-bb">>),
    {ok, Doc} = barrel:fetch_doc(B, <<"c">>, #{conflicts => true}),
    ?assertNot(maps:is_key(<<"_conflicts">>, Doc)),
    ?assertEqual({error, {bad_doc, missing_rev}},
                 barrel:save_doc(B, #{<<"id">> => <<"x">>}, #{new_edits => false})).

new_edits_false_is_idempotent() ->
    {Name, B} = barrel_test_setup:fresh_barrel("idem"),
    {Left, Right} = conflicting_pair(B),
    {ok, Info} = barrel:barrel_infos(Name),
    {ok, [{ok, _, <<"2-cc">>}, {ok, _, <<"2-bb">>}]} =
        barrel:save_docs(B, [Right, Left], #{new_edits => false}),
    ?assertEqual({ok, Info}, barrel:barrel_infos(Name)).

fetch_options() ->
    {_, B} = barrel_test_setup:fresh_barrel("fetchopts"),
    {ok, Id, R1} = barrel:save_doc(B, #{<<"v">> => 1}),
    {ok, Id, R2} = barrel:save_doc(B, #{<<"id">> => Id, <<"_rev">> => R1, <<"v">> => 2}),
    <<"1-", H1/binary>> = R1,
    <<"2-", H2/binary>> = R2,
    ?assertMatch({ok, #{<<"_revisions">> := #{<<"start">> := 2, <<"ids">> := [H2, H1]}}},
                 barrel:fetch_doc(B, Id, #{revs => true})),
    ?assertMatch({ok, #{<<"_rev">> := R2}}, barrel:fetch_doc(B, Id, #{rev => R2})),
    %% Only current leaves keep a body.
    ?assertEqual({error, not_found}, barrel:fetch_doc(B, Id, #{rev => R1})),
    {ok, NoConflicts} = barrel:fetch_doc(B, Id, #{conflicts => true}),
    ?assertNot(maps:is_key(<<"_conflicts">>, NoConflicts)),
    ?assertEqual({error, {bad_rev, <<"nope">>}}, barrel:fetch_doc(B, Id, #{rev => <<"nope">>})),
    ?assertEqual({error, {bad_option, {rev, 1}}}, barrel:fetch_doc(B, Id, #{rev => 1})),
    ?assertEqual({error, {bad_option, {revs, yes}}}, barrel:fetch_doc(B, Id, #{revs => yes})),
    ?assertEqual({error, {bad_option, {color, red}}}, barrel:fetch_doc(B, Id, #{color => red})),
    ?assertEqual({error, {bad_option, [revs]}}, barrel:fetch_doc(B, Id, [revs])).

open_revs() ->
    {_, B} = barrel_test_setup:fresh_barrel("openrevs"),
    conflicting_pair(B),
    {ok, All} = barrel:fetch_doc(B, <<"c">>, #{open_revs => all}),
    ?assertEqual([<<"2-bb">>, <<"2-cc">>], lists:sort([R || {ok, #{<<"_rev">> := R}} <- All])),
    {ok, <<"c">>, Del} = barrel:delete_doc(B, <<"c">>, <<"2-bb">>),
    {ok, Some} = barrel:fetch_doc(B, <<"c">>, #{open_revs => [Del, <<"2-bb">>], revs => true}),
    ?assertMatch([{ok, #{<<"_rev">> := Del, <<"_deleted">> := true,
                         <<"_revisions">> := #{<<"start">> := 3}}},
                  {missing, <<"2-bb">>}], Some),
    ?assertEqual({error, not_found}, barrel:fetch_doc(B, <<"zz">>, #{open_revs => all})),
    ?assertEqual({error, {bad_option, {open_revs, [1]}}},
                 barrel:fetch_doc(B, <<"c">>, #{open_revs => [1]})).

revs_limit_prunes() ->
    Name = <<"limited">>,
    ok = barrel:create_barrel(Name, #{revs_limit => 3}),
    {ok, B} = barrel:open(Name),
    {ok, Id, R0} = barrel:save_doc(B, #{<<"n">> => 0}),
    Last = lists:foldl(fun(N, R) ->
                               {ok, _, R1} = barrel:save_doc(B, #{<<"id">> => Id, <<"_rev">> => R,
                                                                  <<"n">> => N}),
                               R1
                       end, R0, lists:seq(1, 9)),
    {ok, #{<<"_rev">> := Last, <<"_revisions">> := #{<<"start">> := 10, <<"ids">> := Ids}}} =
        barrel:fetch_doc(B, Id, #{revs => true}),
    ?assertEqual(3, length(Ids)).

fetched_doc_can_be_saved_back() ->
    {_, B} = barrel_test_setup:fresh_barrel("back"),
    conflicting_pair(B),
    {ok, Doc} = barrel:fetch_doc(B, <<"c">>, #{conflicts => true}),
    ?assertMatch({ok, <<"c">>, <<"3-", _/binary>>}, barrel:save_doc(B, Doc#{<<"v">> => 3})).
