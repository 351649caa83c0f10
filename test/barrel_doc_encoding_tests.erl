%% Documents are converted straight from terms to the stored JSON and index
%% entries (the direct path, `doc_json' in the NIF) unless they have something
%% only the general conversion (through JSON values) handles. Both must give
%% the same documents: revision ids hash the JSON bytes, and queries read the
%% entries. `barrel_nif:doc_encoding_check/1' runs both on one term.
-module(barrel_doc_encoding_tests).
-include_lib("eunit/include/eunit.hrl").

encoding_test_() ->
    {setup, fun barrel_test_setup:start/0, fun barrel_test_setup:stop/1,
     [fun random_documents_convert_the_same_both_ways/0,
      fun edge_cases_convert_the_same_both_ways/0,
      fun what_the_direct_path_leaves_to_the_general_one/0,
      fun revision_ids_hash_the_canonical_json/0,
      fun random_documents_read_back_as_written/0]}.

%% Thousands of random documents (nested maps small and large, lists, every
%% scalar kind, Unicode and escaped strings): every one is taken by the direct
%% path, and gives exactly what the general conversion gives.
random_documents_convert_the_same_both_ways() ->
    Saved = rand:export_seed(),
    rand:seed(exsss, {7, 11, 2026}),
    try
        Docs = [random_doc() || _ <- lists:seq(1, 3000)],
        Results = [{barrel_nif:doc_encoding_check(D), D} || D <- Docs],
        ?assertEqual([], [R || {C, _} = R <- Results, C =/= same])
    after
        restore(Saved)
    end.

edge_cases_convert_the_same_both_ways() ->
    Floats = [0.0, -0.0, 1.0, -1.0, 0.1, 1.5e300, -1.5e-300, 5.0e-324,
              1.7976931348623157e308, 123456789.123, 1.0e15, 1.0e16, 1.0e21,
              18446744073709551616.0, 9007199254740993.0],
    Ints = [0, 1, -1, 1 bsl 53, (1 bsl 53) + 1, (1 bsl 63) - 1, -(1 bsl 63),
            1 bsl 63, (1 bsl 64) - 1],
    Strings = [<<>>, <<"\"">>, <<"\\">>, <<"a\nb\tc\rd">>, <<0, 1, 31, 127>>,
               <<"é"/utf8>>, <<"Ünïcödé ΑΒΓ"/utf8>>, <<"😀 emoji"/utf8>>,
               <<16#2028/utf8, 16#2029/utf8>>, <<"</script>">>,
               binary:copy(<<"x">>, 300), binary:copy(<<"É"/utf8>>, 200)],
    Big = maps:from_list([{integer_to_binary(N), N} || N <- lists:seq(1, 40)]),
    Deep = lists:foldl(fun(_, Acc) -> #{<<"d">> => Acc} end, 1, lists:seq(1, 127)),
    Docs = [#{<<"f">> => F} || F <- Floats]
        ++ [#{<<"i">> => I} || I <- Ints]
        ++ [#{<<"s">> => S, S => S} || S <- Strings]
        ++ [#{<<"big">> => Big, <<"list">> => [Big, [Big]]},
            maps:merge(Big, #{<<"id">> => <<"big">>}),
            #{<<"deep">> => Deep},
            #{}, #{<<"e">> => #{}, <<"l">> => []},
            #{<<"id">> => null}, #{<<"id">> => <<"x">>},
            #{<<"id">> => <<"x">>, <<"_rev">> => <<"1-0123456789abcdef0123456789abcdef">>},
            #{<<"id">> => <<"x">>, <<"_rev">> => null, <<"_deleted">> => true},
            #{<<"_deleted">> => false}, #{<<"_deleted">> => nil},
            #{<<"n">> => null, <<"m">> => nil, <<"t">> => true, <<"u">> => false},
            #{<<"a">> => [1, 1, 1], <<"b">> => [null, [], #{}]}],
    ?assertEqual([], [{C, D} || D <- Docs, (C = barrel_nif:doc_encoding_check(D)) =/= same]).

%% Attachments, `_revisions', other special members, values JSON has no
%% match for and refused documents go the general way (which reports what is
%% wrong): the direct path says `elsewhere' and saving them still answers as
%% before.
what_the_direct_path_leaves_to_the_general_one() ->
    Deep = lists:foldl(fun(_, Acc) -> #{<<"d">> => Acc} end, 1, lists:seq(1, 129)),
    Elsewhere = [#{<<"_attachments">> => #{}},
                 #{<<"_revisions">> => #{<<"start">> => 1, <<"ids">> => [<<"a">>]}},
                 #{<<"_conflicts">> => []}, #{<<"_other">> => 1},
                 #{<<"id">> => 7}, #{<<"id">> => nil}, #{<<"id">> => <<>>},
                 #{<<"_rev">> => <<"bad">>}, #{<<"_rev">> => nil},
                 #{<<"_deleted">> => <<"yes">>},
                 #{<<"v">> => foo}, #{<<"v">> => 1 bsl 64}, #{<<"v">> => {1, 2}},
                 #{<<"v">> => <<255>>}, #{<<255>> => 1}, #{atom_key => 1},
                 #{<<"v">> => [1 | 2]}, #{<<"deep">> => Deep},
                 #{<<"v">> => lists:seq(1, 10001)}],
    ?assertEqual([elsewhere || _ <- Elsewhere],
                 [barrel_nif:doc_encoding_check(D) || D <- Elsewhere]),
    {_, B} = barrel_test_setup:fresh_barrel("encoding"),
    ?assertEqual({error, {invalid_doc_id, 7}}, barrel:save_doc(B, #{<<"id">> => 7})),
    ?assertEqual({error, {invalid_doc_id, nil}}, barrel:save_doc(B, #{<<"id">> => nil})),
    ?assertEqual({error, {bad_doc, {invalid_value, <<"/v">>}}},
                 barrel:save_doc(B, #{<<"v">> => foo})),
    ?assertMatch({error, {bad_doc, {invalid_key, _}}}, barrel:save_doc(B, #{atom_key => 1})),
    ?assertMatch({error, _}, barrel:save_doc(B, #{<<"deep">> => Deep})),
    ?assertMatch({error, _}, barrel:save_doc(B, #{<<"v">> => lists:seq(1, 10001)})),
    ?assertMatch({ok, _, <<"1-", _/binary>>},
                 barrel:save_doc(B, #{<<"_revisions">> => #{<<"start">> => 1,
                                                            <<"ids">> => [<<"a">>]},
                                      <<"_rev">> => <<"1-a">>},
                                 #{new_edits => false})).

%% A first revision is `1-' and the MD5 of `<<0, Deleted>>' and the MD5 of the
%% body's canonical JSON (members sorted, no spaces): the same content gives the
%% same revision id whatever the way it came in (here: a normal scheduler, and
%% a batch too big for one, which the dirty NIF converts).
revision_ids_hash_the_canonical_json() ->
    {_, B} = barrel_test_setup:fresh_barrel("enc"),
    Doc = #{<<"n">> => 1, <<"k">> => <<"v\"é"/utf8>>, <<"f">> => 1.5,
            <<"l">> => [true, null, #{<<"z">> => -2, <<"a">> => 0.1}]},
    Json = <<"{\"f\":1.5,\"k\":\"v\\\"é\",\"l\":[true,null,{\"a\":0.1,\"z\":-2}],\"n\":1}"/utf8>>,
    Expected = <<"1-", (hex(erlang:md5(<<0, 0, (erlang:md5(Json))/binary>>)))/binary>>,
    ?assertEqual({ok, <<"one">>, Expected}, barrel:save_doc(B, Doc#{<<"id">> => <<"one">>})),
    Pad = binary:copy(<<"p">>, 70000),
    ?assertMatch({ok, [{ok, <<"two">>, Expected}, {ok, _, _}]},
                 barrel:save_docs(B, [Doc#{<<"id">> => <<"two">>},
                                      #{<<"id">> => <<"pad">>, <<"p">> => Pad}])),
    ?assertEqual({ok, Doc#{<<"id">> => <<"one">>, <<"_rev">> => Expected}},
                 barrel:fetch_doc(B, <<"one">>)).

%% Stored JSON is read back into terms by a fast decoder (escape-free
%% strings, `id', `_rev' and `_revisions' merged in key order among the
%% stored members) or, for anything it does not take, by serde_json: either
%% way the document comes back as it was saved (`nil' as `null'), with keys
%% that sort before, between and after the added members.
random_documents_read_back_as_written() ->
    Saved = rand:export_seed(),
    rand:seed(exsss, {5, 3, 2026}),
    try
        ok = barrel:create_barrel(<<"readback">>, #{}),
        {ok, B} = barrel:open(<<"readback">>),
        Around = [<<>>, <<"Z">>, <<"a">>, <<"i">>, <<"ia">>, <<"id2">>, <<"ie">>,
                  <<"z">>, <<"~">>, <<"\"e\"">>, <<"back\\slash">>, <<"new\nline">>],
        Docs = [begin
                    D = random_doc(),
                    Extra = maps:from_list([{K, pick([value(2), <<"tab\there">>, <<"end\\">>])}
                                            || K <- Around, rand:uniform(2) =:= 1]),
                    (maps:merge(D, Extra))#{<<"id">> => integer_to_binary(N)}
                end || N <- lists:seq(1, 1500)],
        {ok, Results} = barrel:save_docs(B, Docs),
        Wrong = [{Doc, Got}
                 || {Doc, {ok, Id, Rev}} <- lists:zip(Docs, Results),
                    Opts <- [#{}, #{revs => true}],
                    Got <- [barrel:fetch_doc(B, Id, Opts)],
                    Got =/= {ok, expected(Doc, Rev, Opts)}],
        ?assertEqual([], Wrong)
    after
        restore(Saved)
    end.

expected(Doc, Rev, Opts) ->
    [N, Hash] = binary:split(Rev, <<"-">>),
    Revisions = case Opts of
                    #{revs := true} ->
                        #{<<"_revisions">> => #{<<"start">> => binary_to_integer(N),
                                                <<"ids">> => [Hash]}};
                    _ -> #{}
                end,
    maps:merge(nil_to_null(Doc#{<<"_rev">> => Rev}), Revisions).

pick(L) -> lists:nth(rand:uniform(length(L)), L).

nil_to_null(nil) -> null;
nil_to_null(M) when is_map(M) -> maps:map(fun(_, V) -> nil_to_null(V) end, M);
nil_to_null(L) when is_list(L) -> [nil_to_null(V) || V <- L];
nil_to_null(V) -> V.

hex(Bin) -> << <<(hex_digit(N))>> || <<N:4>> <= Bin >>.
hex_digit(N) when N < 10 -> $0 + N;
hex_digit(N) -> $a + N - 10.

restore(undefined) -> ok;
restore(Seed) -> rand:seed(Seed).

random_doc() ->
    maps:from_list([{key_plain(), value(3)} || _ <- lists:seq(1, rand:uniform(12))]).

key_plain() ->
    case rand:uniform(8) of
        1 -> unicode:characters_to_binary([$k, 16#E9, rand:uniform(5000) + 160]);
        2 -> <<"a\"b\\c", (rand:uniform(9) + $0)>>;
        3 -> <<"id2">>;
        _ -> <<"k", (integer_to_binary(rand:uniform(60)))/binary>>
    end.

value(0) ->
    scalar();
value(Depth) ->
    case rand:uniform(10) of
        1 -> maps:from_list([{key_plain(), value(Depth - 1)}
                             || _ <- lists:seq(1, rand:uniform(6))]);
        2 when Depth > 2 ->
            %% Over 32 keys: a hash map, which does not iterate in key order.
            maps:from_list([{key_plain(), scalar()} || _ <- lists:seq(1, 33 + rand:uniform(20))]);
        3 -> [value(Depth - 1) || _ <- lists:seq(1, rand:uniform(5) - 1)];
        _ -> scalar()
    end.

scalar() ->
    case rand:uniform(9) of
        1 -> rand:uniform(1 bsl 62) - (1 bsl 61);
        2 -> rand:uniform(100);
        3 -> (rand:uniform() - 0.5) * math:pow(10, rand:uniform(40) - 20);
        4 -> float(rand:uniform(1000));
        5 -> lists:nth(rand:uniform(4), [true, false, null, nil]);
        6 -> unicode:characters_to_binary([rand:uniform(16#D000) || _ <- lists:seq(1, rand:uniform(12))]);
        7 -> <<"\"quoted\"\n\t", (rand:uniform(31))>>;
        8 -> binary:copy(<<"long ">>, rand:uniform(80));
        9 -> (1 bsl 63) + rand:uniform(1000)
    end.
