%% Attachments: inline in documents, standalone puts, stubs kept across
%% updates, replacement and deletion, shared contents, links, streamed writes
%% and reads (ranges, folds, a 200 MiB round trip in bounded memory), and the
%% refusals that leave the previous revision as it was.
-module(barrel_attachments_tests).
-include_lib("eunit/include/eunit.hrl").

-define(MiB, 1048576).

attachments_test_() ->
    {setup, fun barrel_test_setup:start/0, fun barrel_test_setup:stop/1,
     [fun inline_data_is_stored_as_a_stub/0,
      fun put_attachment_creates_the_document/0,
      fun put_attachment_adds_to_an_existing_document/0,
      fun saving_the_fetched_doc_back_keeps_the_attachment/0,
      fun bare_stub_is_completed_from_the_parent/0,
      fun leaving_an_attachment_out_removes_it/0,
      fun put_attachment_replaces_content/0,
      fun delete_attachment_removes_it/0,
      fun delete_doc_removes_its_attachments/0,
      fun same_content_is_shared_between_docs/0,
      fun linked_attachment_returns_its_url/0,
      fun fetch_doc_with_attachments_inlines_data/0,
      fun fetch_at_an_older_leaf/0,
      fun save_docs_with_attachments/0,
      fun streamed_put_from_a_fun_and_a_file/0,
      fun writer_chunks_and_cancel/0,
      fun stream_reads_a_range/0,
      fun fold_attachment_over_chunks/0,
      fun bad_digest_is_refused/0,
      fun wrong_length_is_refused/0,
      fun data_that_is_not_a_binary_is_refused/0,
      fun bad_names_are_refused/0,
      fun max_size_stops_the_write/0,
      fun failing_stream_saves_nothing/0,
      fun bad_arguments_and_options/0,
      {timeout, 300, fun big_streamed_round_trip_in_bounded_memory/0}]}.

%% --- helpers ----------------------------------------------------------------

fresh() ->
    {_, B} = barrel_test_setup:fresh_barrel("atts"),
    B.

md5_digest(Bin) ->
    <<"md5-", (base64:encode(erlang:md5(Bin)))/binary>>.

att(Data) ->
    #{<<"data">> => Data}.

att(Type, Data) ->
    #{<<"content_type">> => Type, <<"data">> => Data}.

stub(Doc, Name) ->
    #{<<"_attachments">> := #{Name := Stub}} = Doc,
    Stub.

%% The document and its attachment's content, as they are now.
snapshot(B, Id, Name) ->
    {ok, Doc} = barrel:fetch_doc(B, Id),
    {Doc, barrel:fetch_attachment(B, Id, Name)}.

%% A doc "a" at revision 1 with text attachment "a.txt" = <<"hello">>.
doc_with_hello(B) ->
    {ok, <<"a">>, Rev} = barrel:save_doc(B, #{<<"id">> => <<"a">>, <<"_attachments">> =>
                                             #{<<"a.txt">> => att(<<"text/plain">>, <<"hello">>)}}),
    Rev.

%% The resident set size of the VM, from /proc.
rss_bytes() ->
    {ok, Status} = file:read_file("/proc/self/status"),
    [Line] = [L || <<"VmRSS:", L/binary>> <- binary:split(Status, <<"\n">>, [global])],
    [Kb, <<"kB">>] = string:lexemes(Line, " \t"),
    binary_to_integer(Kb) * 1024.

%% --- tests ------------------------------------------------------------------

inline_data_is_stored_as_a_stub() ->
    B = fresh(),
    Rev = doc_with_hello(B),
    {ok, Doc} = barrel:fetch_doc(B, <<"a">>),
    ?assertEqual(#{<<"content_type">> => <<"text/plain">>, <<"digest">> => md5_digest(<<"hello">>),
                   <<"length">> => 5, <<"revpos">> => 1, <<"stub">> => true},
                 stub(Doc, <<"a.txt">>)),
    ?assertEqual(Rev, maps:get(<<"_rev">>, Doc)),
    ?assertEqual({ok, <<"hello">>}, barrel:fetch_attachment(B, <<"a">>, <<"a.txt">>)),
    ?assertEqual({ok, #{content_type => <<"text/plain">>, digest => md5_digest(<<"hello">>),
                        length => 5, revpos => 1}},
                 barrel:attachment_info(B, <<"a">>, <<"a.txt">>)),
    %% Any binary is content, UTF-8 or not; the default type is octet-stream.
    {ok, <<"b">>, _} = barrel:save_doc(B, #{<<"id">> => <<"b">>, <<"_attachments">> =>
                                           #{<<"raw">> => att(<<255, 0, 1>>)}}),
    ?assertEqual({ok, <<255, 0, 1>>}, barrel:fetch_attachment(B, <<"b">>, <<"raw">>)),
    ?assertMatch({ok, #{content_type := <<"application/octet-stream">>, length := 3}},
                 barrel:attachment_info(B, <<"b">>, <<"raw">>)),
    ?assertEqual({error, not_found}, barrel:fetch_attachment(B, <<"a">>, <<"nope">>)),
    ?assertEqual({error, not_found}, barrel:fetch_attachment(B, <<"nope">>, <<"a.txt">>)).

put_attachment_creates_the_document() ->
    B = fresh(),
    {ok, <<"p">>, Rev} = barrel:put_attachment(B, <<"p">>, undefined, <<"p.txt">>, <<"data">>,
                                               #{content_type => <<"text/plain">>}),
    ?assertMatch(<<"1-", _/binary>>, Rev),
    {ok, Doc} = barrel:fetch_doc(B, <<"p">>),
    ?assertEqual([<<"_attachments">>, <<"_rev">>, <<"id">>], lists:sort(maps:keys(Doc))),
    ?assertEqual({ok, <<"data">>}, barrel:fetch_attachment(B, <<"p">>, <<"p.txt">>)),
    %% Without a revision over a live document: a conflict, as for save_doc.
    ?assertEqual({error, conflict},
                 barrel:put_attachment(B, <<"p">>, undefined, <<"q.txt">>, <<"x">>)),
    %% put_attachment/5 takes the defaults.
    {ok, <<"p2">>, _} = barrel:put_attachment(B, <<"p2">>, undefined, <<"p.bin">>, <<1, 2>>),
    ?assertMatch({ok, #{content_type := <<"application/octet-stream">>}},
                 barrel:attachment_info(B, <<"p2">>, <<"p.bin">>)).

put_attachment_adds_to_an_existing_document() ->
    B = fresh(),
    Rev1 = doc_with_hello(B),
    {ok, <<"a">>, Rev2} = barrel:put_attachment(B, <<"a">>, Rev1, <<"b.txt">>, <<"second">>),
    ?assertMatch(<<"2-", _/binary>>, Rev2),
    {ok, Doc} = barrel:fetch_doc(B, <<"a">>),
    ?assertEqual([<<"a.txt">>, <<"b.txt">>],
                 lists:sort(maps:keys(maps:get(<<"_attachments">>, Doc)))),
    ?assertEqual(1, maps:get(<<"revpos">>, stub(Doc, <<"a.txt">>))),
    ?assertEqual(2, maps:get(<<"revpos">>, stub(Doc, <<"b.txt">>))),
    ?assertEqual({ok, <<"hello">>}, barrel:fetch_attachment(B, <<"a">>, <<"a.txt">>)),
    ?assertEqual({ok, <<"second">>}, barrel:fetch_attachment(B, <<"a">>, <<"b.txt">>)),
    %% A stale revision is a conflict.
    ?assertEqual({error, conflict},
                 barrel:put_attachment(B, <<"a">>, Rev1, <<"c.txt">>, <<"late">>)).

saving_the_fetched_doc_back_keeps_the_attachment() ->
    B = fresh(),
    _ = doc_with_hello(B),
    {ok, Doc} = barrel:fetch_doc(B, <<"a">>),
    {ok, <<"a">>, Rev2} = barrel:save_doc(B, Doc#{<<"v">> => 2}),
    {ok, Doc2} = barrel:fetch_doc(B, <<"a">>),
    ?assertEqual(Rev2, maps:get(<<"_rev">>, Doc2)),
    ?assertEqual(2, maps:get(<<"v">>, Doc2)),
    ?assertEqual(stub(Doc, <<"a.txt">>), stub(Doc2, <<"a.txt">>)),
    ?assertEqual({ok, <<"hello">>}, barrel:fetch_attachment(B, <<"a">>, <<"a.txt">>)).

bare_stub_is_completed_from_the_parent() ->
    B = fresh(),
    Rev1 = doc_with_hello(B),
    {ok, <<"a">>, _} = barrel:save_doc(B, #{<<"id">> => <<"a">>, <<"_rev">> => Rev1,
                                           <<"_attachments">> =>
                                               #{<<"a.txt">> => #{<<"stub">> => true}}}),
    {ok, Doc} = barrel:fetch_doc(B, <<"a">>),
    ?assertMatch(#{<<"length">> := 5, <<"revpos">> := 1, <<"content_type">> := <<"text/plain">>},
                 stub(Doc, <<"a.txt">>)),
    %% A bare stub the parent does not have.
    #{<<"_rev">> := Rev2} = Doc,
    ?assertEqual({error, {missing_stub, <<"other">>}},
                 barrel:save_doc(B, #{<<"id">> => <<"a">>, <<"_rev">> => Rev2,
                                      <<"_attachments">> =>
                                          #{<<"other">> => #{<<"stub">> => true}}})).

leaving_an_attachment_out_removes_it() ->
    B = fresh(),
    Rev1 = doc_with_hello(B),
    {ok, <<"a">>, Rev2} = barrel:save_doc(B, #{<<"id">> => <<"a">>, <<"_rev">> => Rev1}),
    ?assertEqual({ok, #{<<"id">> => <<"a">>, <<"_rev">> => Rev2}}, barrel:fetch_doc(B, <<"a">>)),
    ?assertEqual({error, not_found}, barrel:fetch_attachment(B, <<"a">>, <<"a.txt">>)).

put_attachment_replaces_content() ->
    B = fresh(),
    Rev1 = doc_with_hello(B),
    {ok, <<"a">>, _} = barrel:put_attachment(B, <<"a">>, Rev1, <<"a.txt">>, <<"bonjour">>,
                                             #{content_type => <<"text/x-french">>}),
    ?assertEqual({ok, <<"bonjour">>}, barrel:fetch_attachment(B, <<"a">>, <<"a.txt">>)),
    ?assertEqual({ok, #{content_type => <<"text/x-french">>, digest => md5_digest(<<"bonjour">>),
                        length => 7, revpos => 2}},
                 barrel:attachment_info(B, <<"a">>, <<"a.txt">>)).

delete_attachment_removes_it() ->
    B = fresh(),
    Rev1 = doc_with_hello(B),
    {ok, <<"a">>, Rev2} = barrel:put_attachment(B, <<"a">>, Rev1, <<"b.txt">>, <<"b">>),
    {ok, <<"a">>, Rev3} = barrel:delete_attachment(B, <<"a">>, Rev2, <<"a.txt">>),
    ?assertEqual({error, not_found}, barrel:fetch_attachment(B, <<"a">>, <<"a.txt">>)),
    ?assertEqual({ok, <<"b">>}, barrel:fetch_attachment(B, <<"a">>, <<"b.txt">>)),
    ?assertEqual({error, not_found}, barrel:delete_attachment(B, <<"a">>, Rev3, <<"a.txt">>)),
    ?assertEqual({error, conflict}, barrel:delete_attachment(B, <<"a">>, Rev2, <<"b.txt">>)),
    {ok, <<"a">>, Rev4} = barrel:delete_attachment(B, <<"a">>, Rev3, <<"b.txt">>),
    ?assertEqual({ok, #{<<"id">> => <<"a">>, <<"_rev">> => Rev4}}, barrel:fetch_doc(B, <<"a">>)).

delete_doc_removes_its_attachments() ->
    B = fresh(),
    Rev1 = doc_with_hello(B),
    {ok, <<"a">>, _} = barrel:delete_doc(B, <<"a">>, Rev1),
    ?assertEqual({error, not_found}, barrel:fetch_attachment(B, <<"a">>, <<"a.txt">>)),
    ?assertEqual({error, not_found}, barrel:attachment_info(B, <<"a">>, <<"a.txt">>)),
    %% Created again, without the attachment.
    {ok, <<"a">>, _} = barrel:save_doc(B, #{<<"id">> => <<"a">>}),
    ?assertEqual({error, not_found}, barrel:fetch_attachment(B, <<"a">>, <<"a.txt">>)).

same_content_is_shared_between_docs() ->
    B = fresh(),
    Content = crypto:strong_rand_bytes(300000),
    {ok, _, RevX} = barrel:put_attachment(B, <<"x">>, undefined, <<"f">>, Content),
    {ok, _, RevY} = barrel:save_doc(B, #{<<"id">> => <<"y">>,
                                         <<"_attachments">> => #{<<"g">> => att(Content)}}),
    ?assertEqual({ok, Content}, barrel:fetch_attachment(B, <<"x">>, <<"f">>)),
    ?assertEqual({ok, Content}, barrel:fetch_attachment(B, <<"y">>, <<"g">>)),
    {ok, _, _} = barrel:delete_doc(B, <<"x">>, RevX),
    ?assertEqual({ok, Content}, barrel:fetch_attachment(B, <<"y">>, <<"g">>)),
    %% Still there after the last reference is replaced and written again.
    {ok, _, RevY2} = barrel:delete_attachment(B, <<"y">>, RevY, <<"g">>),
    ?assertEqual({error, not_found}, barrel:fetch_attachment(B, <<"y">>, <<"g">>)),
    {ok, _, _} = barrel:put_attachment(B, <<"y">>, RevY2, <<"g">>, Content),
    ?assertEqual({ok, Content}, barrel:fetch_attachment(B, <<"y">>, <<"g">>)).

linked_attachment_returns_its_url() ->
    B = fresh(),
    Url = <<"https://example.com/a.png">>,
    {ok, <<"l">>, _} = barrel:save_doc(B, #{<<"id">> => <<"l">>, <<"_attachments">> =>
                                           #{<<"a.png">> => #{<<"url">> => Url,
                                                              <<"content_type">> => <<"image/png">>}}}),
    ?assertEqual({ok, {url, Url}}, barrel:fetch_attachment(B, <<"l">>, <<"a.png">>)),
    ?assertEqual({ok, #{content_type => <<"image/png">>, url => Url, revpos => 1}},
                 barrel:attachment_info(B, <<"l">>, <<"a.png">>)),
    ?assertEqual({error, not_found}, barrel:attachment_stream(B, <<"l">>, <<"a.png">>, #{})),
    {ok, Doc} = barrel:fetch_doc(B, <<"l">>, #{attachments => true}),
    ?assertEqual(#{<<"url">> => Url, <<"content_type">> => <<"image/png">>, <<"revpos">> => 1,
                   <<"stub">> => true},
                 stub(Doc, <<"a.png">>)),
    ?assertMatch({error, {bad_attachment, _}},
                 barrel:save_doc(B, #{<<"_attachments">> =>
                                          #{<<"x">> => #{<<"url">> => <<"ftp://h/x">>}}})).

fetch_doc_with_attachments_inlines_data() ->
    B = fresh(),
    Rev1 = doc_with_hello(B),
    {ok, _, Rev2} = barrel:put_attachment(B, <<"a">>, Rev1, <<"b.bin">>, <<0, 1, 2>>),
    {ok, Doc} = barrel:fetch_doc(B, <<"a">>, #{attachments => true}),
    ?assertEqual(#{<<"id">> => <<"a">>, <<"_rev">> => Rev2, <<"_attachments">> =>
                       #{<<"a.txt">> => #{<<"content_type">> => <<"text/plain">>,
                                          <<"digest">> => md5_digest(<<"hello">>),
                                          <<"length">> => 5, <<"revpos">> => 1,
                                          <<"data">> => <<"hello">>},
                         <<"b.bin">> => #{<<"content_type">> => <<"application/octet-stream">>,
                                          <<"digest">> => md5_digest(<<0, 1, 2>>),
                                          <<"length">> => 3, <<"revpos">> => 2,
                                          <<"data">> => <<0, 1, 2>>}}},
                 Doc),
    %% Saved back as it came: same contents, same digests.
    {ok, _, _} = barrel:save_doc(B, Doc),
    {ok, Doc3} = barrel:fetch_doc(B, <<"a">>),
    ?assertEqual(md5_digest(<<"hello">>), maps:get(<<"digest">>, stub(Doc3, <<"a.txt">>))),
    %% Without the option, and for a document without attachments, nothing changes.
    {ok, _, _} = barrel:save_doc(B, #{<<"id">> => <<"plain">>}),
    {ok, Plain} = barrel:fetch_doc(B, <<"plain">>),
    ?assertEqual({ok, Plain}, barrel:fetch_doc(B, <<"plain">>, #{attachments => true})),
    ?assertEqual({error, {bad_option, {attachments, yes}}},
                 barrel:fetch_doc(B, <<"a">>, #{attachments => yes})),
    ?assertEqual({error, not_found}, barrel:fetch_doc(B, <<"nope">>, #{attachments => true})).

fetch_at_an_older_leaf() ->
    B = fresh(),
    Rev1 = doc_with_hello(B),
    %% A conflicting branch keeps its own content.
    {ok, _, Rev2} = barrel:put_attachment(B, <<"a">>, Rev1, <<"a.txt">>, <<"new">>),
    Branch = #{<<"id">> => <<"a">>, <<"_rev">> => <<"2-00000000000000000000000000000000">>,
               <<"_revisions">> => #{<<"start">> => 2,
                                     <<"ids">> => [<<"00000000000000000000000000000000">>,
                                                   binary:part(Rev1, 2, 32)]},
               <<"_attachments">> => #{<<"a.txt">> => att(<<"branch">>)}},
    {ok, _, Leaf} = barrel:save_doc(B, Branch, #{new_edits => false}),
    ?assertEqual({ok, <<"new">>}, barrel:fetch_attachment(B, <<"a">>, <<"a.txt">>, #{rev => Rev2})),
    ?assertEqual({ok, <<"branch">>},
                 barrel:fetch_attachment(B, <<"a">>, <<"a.txt">>, #{rev => Leaf})),
    ?assertMatch({ok, #{length := 6}},
                 barrel:attachment_info(B, <<"a">>, <<"a.txt">>, #{rev => Leaf})),
    ?assertEqual({error, not_found},
                 barrel:fetch_attachment(B, <<"a">>, <<"a.txt">>, #{rev => Rev1})).

save_docs_with_attachments() ->
    B = fresh(),
    {ok, [{ok, <<"d1">>, _}, {error, {bad_attachment, _}}, {ok, <<"d3">>, _}]} =
        barrel:save_docs(B, [#{<<"id">> => <<"d1">>, <<"_attachments">> => #{<<"a">> => att(<<"1">>)}},
                             #{<<"id">> => <<"d2">>, <<"_attachments">> => #{<<"a">> => att(2)}},
                             #{<<"id">> => <<"d3">>}]),
    ?assertEqual({ok, <<"1">>}, barrel:fetch_attachment(B, <<"d1">>, <<"a">>)),
    ?assertEqual({error, not_found}, barrel:fetch_doc(B, <<"d2">>)),
    %% `_attachments' that is empty or null is no attachment at all.
    {ok, _, _} = barrel:save_doc(B, #{<<"id">> => <<"e">>, <<"_attachments">> => #{}}),
    {ok, _, _} = barrel:save_doc(B, #{<<"id">> => <<"n">>, <<"_attachments">> => null}),
    ?assertMatch({ok, #{<<"id">> := <<"e">>} = D} when map_size(D) =:= 2,
                 barrel:fetch_doc(B, <<"e">>)).

streamed_put_from_a_fun_and_a_file() ->
    B = fresh(),
    Chunks = [crypto:strong_rand_bytes(100000) || _ <- lists:seq(1, 5)],
    Content = iolist_to_binary(Chunks),
    Next = chunk_fun([[C] || C <- Chunks]),
    {ok, _, _} = barrel:put_attachment(B, <<"s">>, undefined, <<"s.bin">>, {stream, Next},
                                       #{digest => md5_digest(Content), length => byte_size(Content)}),
    ?assertEqual({ok, Content}, barrel:fetch_attachment(B, <<"s">>, <<"s.bin">>)),
    Path = filename:join(barrel_test_setup:tmp_dir(), "content.bin"),
    ok = file:write_file(Path, Content),
    {ok, _, _} = barrel:put_attachment(B, <<"f">>, undefined, <<"f.bin">>, {file, Path}),
    ?assertEqual({ok, Content}, barrel:fetch_attachment(B, <<"f">>, <<"f.bin">>)),
    ?assertEqual({error, {file_error, enoent}},
                 barrel:put_attachment(B, <<"g">>, undefined, <<"g">>, {file, Path ++ ".none"})),
    ?assertEqual({error, not_found}, barrel:fetch_doc(B, <<"g">>)),
    ok = barrel_test_setup:rm_dir(filename:dirname(Path)).

%% A fun that returns each element of the list, then `eof'.
chunk_fun(Items) ->
    Key = make_ref(),
    put(Key, Items),
    fun() ->
            case get(Key) of
                [Item | Rest] -> put(Key, Rest), {ok, Item};
                [] -> eof
            end
    end.

writer_chunks_and_cancel() ->
    B = fresh(),
    {ok, W} = barrel:attachment_writer(B, <<"w">>, undefined, <<"log.txt">>,
                                       #{content_type => <<"text/plain">>}),
    ok = barrel:write_attachment(W, <<"line 1\n">>),
    ok = barrel:write_attachment(W, [<<"line ">>, $2, <<"\n">>]),
    ?assertEqual({error, {bad_arg, chunk}}, barrel:write_attachment(W, [an_atom])),
    {ok, <<"w">>, Rev} = barrel:finish_attachment(W),
    ?assertEqual({ok, <<"line 1\nline 2\n">>}, barrel:fetch_attachment(B, <<"w">>, <<"log.txt">>)),
    ?assertMatch({error, {bad_param, _}}, barrel:write_attachment(W, <<"more">>)),
    ?assertMatch({error, {bad_param, _}}, barrel:finish_attachment(W)),
    ?assertEqual(ok, barrel:cancel_attachment(W)),
    {ok, W2} = barrel:attachment_writer(B, <<"w">>, Rev, <<"other.txt">>, #{}),
    ok = barrel:write_attachment(W2, <<"abandoned">>),
    ok = barrel:cancel_attachment(W2),
    ?assertMatch({error, {bad_param, _}}, barrel:finish_attachment(W2)),
    ?assertMatch({ok, #{<<"_rev">> := Rev}}, barrel:fetch_doc(B, <<"w">>)),
    ?assertEqual({error, {bad_arg, writer}}, barrel:write_attachment(make_ref(), <<"x">>)).

stream_reads_a_range() ->
    B = fresh(),
    Content = crypto:strong_rand_bytes(300000),
    {ok, _, _} = barrel:put_attachment(B, <<"r">>, undefined, <<"r.bin">>, Content),
    {ok, S, Info} = barrel:attachment_stream(B, <<"r">>, <<"r.bin">>, #{}),
    ?assertEqual(#{content_type => <<"application/octet-stream">>, digest => md5_digest(Content),
                   length => 300000, revpos => 1}, Info),
    Chunks = read_all(S),
    ?assertEqual([131072, 131072, 37856], [byte_size(C) || C <- Chunks]),
    ?assertEqual(Content, iolist_to_binary(Chunks)),
    ?assertEqual(eof, barrel:read_attachment(S)),
    %% A range across a chunk boundary.
    {ok, R, _} = barrel:attachment_stream(B, <<"r">>, <<"r.bin">>, #{range => {100000, 200000}}),
    ?assertEqual(binary:part(Content, 100000, 100000), iolist_to_binary(read_all(R))),
    %% Clamped to the content; an empty range reads nothing.
    {ok, T, _} = barrel:attachment_stream(B, <<"r">>, <<"r.bin">>, #{range => {299990, 1 bsl 40}}),
    ?assertEqual(binary:part(Content, 299990, 10), iolist_to_binary(read_all(T))),
    {ok, E, _} = barrel:attachment_stream(B, <<"r">>, <<"r.bin">>, #{range => {5, 5}}),
    ?assertEqual(eof, barrel:read_attachment(E)),
    ?assertEqual({error, {bad_option, {range, {5, 4}}}},
                 barrel:attachment_stream(B, <<"r">>, <<"r.bin">>, #{range => {5, 4}})),
    ?assertEqual({error, {bad_option, {range, 5}}},
                 barrel:attachment_stream(B, <<"r">>, <<"r.bin">>, #{range => 5})),
    ?assertEqual({error, not_found}, barrel:attachment_stream(B, <<"r">>, <<"x">>, #{})),
    ?assertEqual({error, {bad_arg, stream}}, barrel:read_attachment(make_ref())).

read_all(S) ->
    case barrel:read_attachment(S) of
        {ok, C} -> [C | read_all(S)];
        eof -> []
    end.

fold_attachment_over_chunks() ->
    B = fresh(),
    Content = crypto:strong_rand_bytes(400000),
    {ok, _, _} = barrel:put_attachment(B, <<"f">>, undefined, <<"f">>, Content),
    {ok, Ctx} = barrel:fold_attachment(B, <<"f">>, <<"f">>,
                                       fun(C, Acc) -> {ok, crypto:hash_update(Acc, C)} end,
                                       crypto:hash_init(md5), #{}),
    ?assertEqual(erlang:md5(Content), crypto:hash_final(Ctx)),
    ?assertEqual({ok, 1}, barrel:fold_attachment(B, <<"f">>, <<"f">>,
                                                 fun(_, N) -> {stop, N + 1} end, 0, #{})),
    ?assertEqual({ok, 0}, barrel:fold_attachment(B, <<"f">>, <<"f">>, fun(_, _) -> stop end, 0,
                                                 #{})),
    ?assertEqual({ok, 10}, barrel:fold_attachment(B, <<"f">>, <<"f">>,
                                                  fun(C, N) -> {ok, N + byte_size(C)} end, 0,
                                                  #{range => {0, 10}})),
    ?assertEqual({error, {bad_arg, fold_fun}},
                 barrel:fold_attachment(B, <<"f">>, <<"f">>, fun(_) -> ok end, 0, #{})),
    ?assertError({bad_fold_return, nope},
                 barrel:fold_attachment(B, <<"f">>, <<"f">>, fun(_, _) -> nope end, 0, #{})).

%% Each refused write leaves revision 1 and its content as they were.
assert_unchanged(B, Before) ->
    ?assertEqual(Before, snapshot(B, <<"a">>, <<"a.txt">>)).

bad_digest_is_refused() ->
    B = fresh(),
    Rev1 = doc_with_hello(B),
    Before = snapshot(B, <<"a">>, <<"a.txt">>),
    Wrong = md5_digest(<<"other">>),
    ?assertMatch({error, {bad_attachment, <<"a.txt: digest ", _/binary>>}},
                 barrel:put_attachment(B, <<"a">>, Rev1, <<"a.txt">>, <<"bye">>,
                                       #{digest => Wrong})),
    ?assertEqual({error, {bad_attachment, <<"a.txt: malformed digest \"md5-zz\"">>}},
                 barrel:put_attachment(B, <<"a">>, Rev1, <<"a.txt">>, <<"bye">>,
                                       #{digest => <<"md5-zz">>})),
    ?assertMatch({error, {bad_attachment, <<"a.txt: digest ", _/binary>>}},
                 barrel:save_doc(B, #{<<"id">> => <<"a">>, <<"_rev">> => Rev1,
                                      <<"_attachments">> =>
                                          #{<<"a.txt">> => (att(<<"bye">>))#{<<"digest">> => Wrong}}})),
    assert_unchanged(B, Before).

wrong_length_is_refused() ->
    B = fresh(),
    Rev1 = doc_with_hello(B),
    Before = snapshot(B, <<"a">>, <<"a.txt">>),
    ?assertEqual({error, {bad_attachment, <<"a.txt: length 4 announced, 3 bytes given">>}},
                 barrel:put_attachment(B, <<"a">>, Rev1, <<"a.txt">>, <<"bye">>, #{length => 4})),
    ?assertEqual({error, {bad_attachment, <<"a.txt: length 2 announced, 3 bytes given">>}},
                 barrel:save_doc(B, #{<<"id">> => <<"a">>, <<"_rev">> => Rev1,
                                      <<"_attachments">> =>
                                          #{<<"a.txt">> => (att(<<"bye">>))#{<<"length">> => 2}}})),
    assert_unchanged(B, Before).

data_that_is_not_a_binary_is_refused() ->
    B = fresh(),
    Rev1 = doc_with_hello(B),
    Before = snapshot(B, <<"a">>, <<"a.txt">>),
    Save = fun(Atts) ->
                   barrel:save_doc(B, #{<<"id">> => <<"a">>, <<"_rev">> => Rev1,
                                        <<"_attachments">> => Atts})
           end,
    ?assertEqual({error, {bad_attachment, <<"a.txt: data must be a binary">>}},
                 Save(#{<<"a.txt">> => att([1, 2, 3])})),
    ?assertEqual({error, {bad_attachment, <<"a.txt: data must be a binary">>}},
                 Save(#{<<"a.txt">> => att(<<1:3>>)})),
    ?assertEqual({error, {bad_attachment, <<"a.txt: must be a map">>}},
                 Save(#{<<"a.txt">> => <<"hello">>})),
    ?assertEqual({error, {bad_attachment, <<"_attachments must be a map">>}},
                 Save([<<"a.txt">>])),
    ?assertEqual({error, {bad_attachment, <<"a.txt: needs data, stub, url or follows">>}},
                 Save(#{<<"a.txt">> => #{<<"content_type">> => <<"text/plain">>}})),
    ?assertEqual({error, {bad_attachment, <<"a.txt: content_type must be a string">>}},
                 Save(#{<<"a.txt">> => (att(<<"x">>))#{<<"content_type">> => 7}})),
    ?assertEqual({error, {bad_doc, {invalid_value, <<"/_attachments/a~1b/content_type">>}}},
                 Save(#{<<"a/b">> => (att(<<"x">>))#{<<"content_type">> => {tuple}}})),
    ?assertEqual({error, {bad_arg, content}},
                 barrel:put_attachment(B, <<"a">>, Rev1, <<"a.txt">>, [<<"io">>, <<"list">>])),
    ?assertEqual({error, {bad_arg, content}},
                 barrel:put_attachment(B, <<"a">>, Rev1, <<"a.txt">>, {stream, not_a_fun})),
    ?assertError({bad_stream_return, what},
                 barrel:put_attachment(B, <<"a">>, Rev1, <<"a.txt">>,
                                       {stream, fun() -> what end})),
    assert_unchanged(B, Before).

bad_names_are_refused() ->
    B = fresh(),
    Rev1 = doc_with_hello(B),
    Before = snapshot(B, <<"a">>, <<"a.txt">>),
    Long = binary:copy(<<"n">>, 1025),
    [?assertEqual({error, {bad_attachment, <<Name/binary, ": invalid attachment name">>}},
                  barrel:put_attachment(B, <<"a">>, Rev1, Name, <<"x">>))
     || Name <- [<<>>, <<"_x">>, <<"a", 0, "b">>, Long]],
    ?assertEqual({error, {bad_attachment, <<"_x: invalid attachment name">>}},
                 barrel:save_doc(B, #{<<"id">> => <<"a">>, <<"_rev">> => Rev1,
                                      <<"_attachments">> => #{<<"_x">> => att(<<"x">>)}})),
    ?assertMatch({error, {bad_attachment, <<"<<255>>: names are UTF-8 binaries">>}},
                 barrel:put_attachment(B, <<"a">>, Rev1, <<255>>, <<"x">>)),
    ?assertMatch({error, {bad_attachment, _}},
                 barrel:put_attachment(B, <<"a">>, Rev1, an_atom, <<"x">>)),
    ?assertMatch({error, {bad_attachment, _}},
                 barrel:save_doc(B, #{<<"_attachments">> => #{an_atom => att(<<"x">>)}})),
    assert_unchanged(B, Before).

max_size_stops_the_write() ->
    B = fresh(),
    Rev1 = doc_with_hello(B),
    Before = snapshot(B, <<"a">>, <<"a.txt">>),
    ?assertEqual({error, {attachment_too_large, 4}},
                 barrel:put_attachment(B, <<"a">>, Rev1, <<"a.txt">>, <<"12345">>,
                                       #{max_size => 4})),
    %% A stream stops at the first chunk over the limit: later ones are not asked for.
    Endless = fun() -> {ok, binary:copy(<<"x">>, 65536)} end,
    ?assertEqual({error, {attachment_too_large, 1000000}},
                 barrel:put_attachment(B, <<"a">>, Rev1, <<"a.txt">>, {stream, Endless},
                                       #{max_size => 1000000})),
    {ok, _, _} = barrel:put_attachment(B, <<"exact">>, undefined, <<"e">>, <<"1234">>,
                                       #{max_size => 4}),
    assert_unchanged(B, Before).

failing_stream_saves_nothing() ->
    B = fresh(),
    Rev1 = doc_with_hello(B),
    Before = snapshot(B, <<"a">>, <<"a.txt">>),
    Next = chunk_fun([<<"partial ">>, <<"content">>]),
    Failing = fun() -> case Next() of eof -> {error, disk_gone}; Chunk -> Chunk end end,
    ?assertEqual({error, disk_gone},
                 barrel:put_attachment(B, <<"a">>, Rev1, <<"a.txt">>, {stream, Failing})),
    ?assertError(boom, barrel:put_attachment(B, <<"a">>, Rev1, <<"a.txt">>,
                                             {stream, fun() -> error(boom) end})),
    assert_unchanged(B, Before).

bad_arguments_and_options() ->
    B = fresh(),
    Rev1 = doc_with_hello(B),
    ?assertEqual({error, {bad_arg, barrel}},
                 barrel:put_attachment(not_a_barrel, <<"a">>, Rev1, <<"n">>, <<"x">>)),
    ?assertEqual({error, {invalid_doc_id, 7}},
                 barrel:put_attachment(B, 7, Rev1, <<"n">>, <<"x">>)),
    ?assertEqual({error, {invalid_doc_id, <<"_a">>}},
                 barrel:put_attachment(B, <<"_a">>, undefined, <<"n">>, <<"x">>)),
    ?assertEqual({error, {bad_rev, bad}}, barrel:put_attachment(B, <<"a">>, bad, <<"n">>, <<"x">>)),
    ?assertEqual({error, {bad_rev, <<"bad">>}},
                 barrel:put_attachment(B, <<"a">>, <<"bad">>, <<"n">>, <<"x">>)),
    ?assertEqual({error, {bad_option, {colour, red}}},
                 barrel:put_attachment(B, <<"a">>, Rev1, <<"n">>, <<"x">>, #{colour => red})),
    ?assertEqual({error, {bad_option, {length, -1}}},
                 barrel:put_attachment(B, <<"a">>, Rev1, <<"n">>, <<"x">>, #{length => -1})),
    ?assertEqual({error, {bad_option, [nope]}},
                 barrel:put_attachment(B, <<"a">>, Rev1, <<"n">>, <<"x">>, [nope])),
    ?assertEqual({error, {bad_option, {rev, 1}}},
                 barrel:fetch_attachment(B, <<"a">>, <<"a.txt">>, #{rev => 1})),
    ?assertEqual({error, {bad_option, {rev, 1}}},
                 barrel:attachment_info(B, <<"a">>, <<"a.txt">>, #{rev => 1})),
    ?assertEqual({error, {bad_rev, <<"x">>}},
                 barrel:delete_attachment(B, <<"a">>, <<"x">>, <<"a.txt">>)),
    ?assertEqual({error, {bad_arg, barrel}}, barrel:fetch_attachment(nope, <<"a">>, <<"a.txt">>)),
    ?assertEqual({ok, <<"hello">>}, barrel:fetch_attachment(B, <<"a">>, <<"a.txt">>)).

%% 200 MiB written from a fun and read back in chunks: the digests agree on
%% both sides and the VM's resident memory stays far below the content's size.
big_streamed_round_trip_in_bounded_memory() ->
    B = fresh(),
    Size = 200 * ?MiB,
    Chunk = ?MiB,
    garbage_collect(),
    Baseline = rss_bytes(),
    Peak = counters:new(1, []),
    Sample = fun() ->
                     Rss = rss_bytes(),
                     case Rss > counters:get(Peak, 1) of
                         true -> counters:put(Peak, 1, Rss);
                         false -> ok
                     end
             end,
    Key = make_ref(),
    put(Key, {0, crypto:hash_init(md5)}),
    Next = fun() ->
                   case get(Key) of
                       {Size, _} -> eof;
                       {Sent, Ctx} ->
                           Bytes = crypto:strong_rand_bytes(Chunk),
                           put(Key, {Sent + Chunk, crypto:hash_update(Ctx, Bytes)}),
                           Sent rem (16 * ?MiB) =:= 0 andalso Sample(),
                           {ok, Bytes}
                   end
           end,
    {ok, <<"big">>, _} = barrel:put_attachment(B, <<"big">>, undefined, <<"big.bin">>,
                                               {stream, Next}),
    {Size, WriteCtx} = get(Key),
    Written = crypto:hash_final(WriteCtx),
    ?assertMatch({ok, #{length := Size}}, barrel:attachment_info(B, <<"big">>, <<"big.bin">>)),
    {ok, {ReadCtx, Read, _}} =
        barrel:fold_attachment(B, <<"big">>, <<"big.bin">>,
                               fun(C, {Ctx, N, I}) ->
                                       I rem 128 =:= 0 andalso Sample(),
                                       {ok, {crypto:hash_update(Ctx, C), N + byte_size(C), I + 1}}
                               end, {crypto:hash_init(md5), 0, 0}, #{}),
    Sample(),
    ?assertEqual(Size, Read),
    ?assertEqual(Written, crypto:hash_final(ReadCtx)),
    {ok, #{digest := Digest}} = barrel:attachment_info(B, <<"big">>, <<"big.bin">>),
    ?assertEqual(<<"md5-", (base64:encode(Written))/binary>>, Digest),
    Growth = counters:get(Peak, 1) - Baseline,
    ?debugFmt("200 MiB round trip: RSS baseline ~b MiB, peak growth ~b MiB",
              [Baseline div ?MiB, Growth div ?MiB]),
    ?assert(Growth < 100 * ?MiB).
