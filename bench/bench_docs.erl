%% @doc The documents every peer stores: 1 KB JSON-like objects with 22 fields.
%%
%% A fixed set of templates (random words, numbers, nested objects and lists, made from a fixed
%% seed) is written once to a file as JSON lines, which the external peers (RocksDB, PouchDB)
%% read. Document `I' of keyspace `Ks' is template `(I + Variant) rem K' with `<<"id">>' (its
%% key, `<<"Ks-000000000I">>') and `<<"seq">>' (`I') added in front, so every peer stores the
%% same content under the same keys: Barrel, Mnesia and DETS as this map, RocksDB as its JSON
%% bytes, PouchDB as the parsed object. Variant 1 is the content an update writes.
%%
%% The attachment workloads store {@link attachment/2} under the same keys: bytes every peer
%% generates alike from the key (ChaCha20, as the Rust and Node peers do too).
-module(bench_docs).

-export([templates/1, write_templates/2, key/2, doc/4, attachment/2, json/1]).

-define(DOC_BYTES, 1024).

%% @doc `Count' templates as a tuple of maps (each with placeholder `id' and `seq' fields, so
%% setting them keeps the map's key set and stays cheap).
-spec templates(pos_integer()) -> tuple().
templates(Count) ->
    Saved = rand:export_seed(),
    rand:seed(exsss, {17, 42, 2024}),
    Words = list_to_tuple([word() || _ <- lists:seq(1, 256)]),
    Ts = [template(Words, N) || N <- lists:seq(1, Count)],
    restore_seed(Saved),
    list_to_tuple(Ts).

restore_seed(undefined) -> ok;
restore_seed(Seed) -> rand:seed(Seed).

%% @doc Writes the templates, without `id' and `seq', one JSON object a line.
-spec write_templates(file:filename(), tuple()) -> ok.
write_templates(File, Templates) ->
    Lines = [[json(maps:without([<<"id">>, <<"seq">>], T)), $\n]
             || T <- tuple_to_list(Templates)],
    ok = file:write_file(File, Lines).

%% @doc The key (and document id) of item `I' of keyspace `Ks'.
-spec key(binary(), non_neg_integer()) -> binary().
key(Ks, I) ->
    Digits = integer_to_binary(I),
    <<Ks/binary, "-", (binary:copy(<<"0">>, max(0, 10 - byte_size(Digits))))/binary,
      Digits/binary>>.

%% @doc Document `I' of keyspace `Ks'.
-spec doc(tuple(), binary(), non_neg_integer(), non_neg_integer()) -> map().
doc(Templates, Ks, I, Variant) ->
    T = element((I + Variant) rem tuple_size(Templates) + 1, Templates),
    T#{<<"id">> := key(Ks, I), <<"seq">> := I}.

%% @doc The `Bytes' bytes of the attachment stored under `Key': the ChaCha20 keystream (RFC 8439
%% block function, counter and nonce 0) keyed by `Key' padded with zeros to 32 bytes. Pseudo-
%% random, so neither a compressor nor content deduplication can shrink it, and the same in every
%% peer: `peer_protocol::attachment' (rand_chacha's `ChaCha20Rng' from that seed) and
%% `attachment' in `pouchdb_peer.js' (Node's `chacha20' cipher) compute the same bytes.
-spec attachment(binary(), non_neg_integer()) -> binary().
attachment(Key, Bytes) ->
    Seed = binary:part(<<Key/binary, 0:256>>, 0, 32),
    crypto:crypto_one_time(chacha20, Seed, <<0:128>>, <<0:(8 * Bytes)>>, true).

template(Words, N) ->
    W = fun() -> element(rand:uniform(tuple_size(Words)), Words) end,
    Text = fun(Bytes) -> text(W, Bytes, []) end,
    Base = #{<<"id">> => <<>>, <<"seq">> => 0,
             <<"type">> => element(N rem 4 + 1, {<<"user">>, <<"order">>, <<"post">>, <<"item">>}),
             <<"name">> => <<(W())/binary, " ", (W())/binary>>,
             <<"email">> => <<(W())/binary, "@", (W())/binary, ".example">>,
             <<"age">> => 18 + rand:uniform(60),
             <<"score">> => rand:uniform() * 100,
             <<"active">> => rand:uniform(2) =:= 1,
             <<"tags">> => [W() || _ <- lists:seq(1, 4)],
             <<"address">> => #{<<"street">> => Text(24), <<"city">> => W(),
                                <<"zip">> => integer_to_binary(10000 + rand:uniform(89999)),
                                <<"country">> => W()},
             <<"created_at">> => timestamp(), <<"updated_at">> => timestamp(),
             <<"status">> => lists:nth(rand:uniform(3), [<<"new">>, <<"active">>, <<"closed">>]),
             <<"priority">> => rand:uniform(5),
             <<"ratio">> => rand:uniform(),
             <<"description">> => Text(150),
             <<"version">> => rand:uniform(100),
             <<"owner">> => W(),
             <<"category">> => W(),
             <<"flags">> => [true, false, null, rand:uniform(2) =:= 1],
             <<"metrics">> => #{<<"views">> => rand:uniform(100000),
                                <<"likes">> => rand:uniform(1000),
                                <<"shares">> => rand:uniform(100)},
             <<"notes">> => <<>>},
    %% Pad "notes" so that the stored JSON, id and seq included, is about 1 KB.
    Sized = Base#{<<"id">> := key(<<"w1">>, 0), <<"seq">> := 500000},
    Notes = Text(max(0, ?DOC_BYTES - iolist_size(json(Sized)))),
    Base#{<<"notes">> := Notes}.

text(_W, Bytes, Acc) when Bytes =< 0 ->
    Bin = iolist_to_binary(lists:join(<<" ">>, lists:reverse(Acc))),
    binary:part(Bin, 0, min(byte_size(Bin), max(0, byte_size(Bin) + Bytes)));
text(W, Bytes, Acc) ->
    Word = W(),
    text(W, Bytes - byte_size(Word) - 1, [Word | Acc]).

word() ->
    Letters = <<"abcdefghijklmnopqrstuvwxyz">>,
    << <<(binary:at(Letters, rand:uniform(26) - 1))>> || _ <- lists:seq(1, 3 + rand:uniform(7)) >>.

timestamp() ->
    iolist_to_binary(io_lib:format("2024-~2..0B-~2..0BT~2..0B:~2..0B:~2..0BZ",
                                   [rand:uniform(12), rand:uniform(28), rand:uniform(24) - 1,
                                    rand:uniform(60) - 1, rand:uniform(60) - 1])).

%% @doc JSON text of a term made of maps, lists, binaries, numbers, booleans and `null' (OTP 25
%% has no JSON module).
-spec json(term()) -> iodata().
json(M) when is_map(M) ->
    Fields = [[json(K), $:, json(V)] || {K, V} <- lists:keysort(1, maps:to_list(M))],
    [${, lists:join($,, Fields), $}];
json(L) when is_list(L) -> [$[, lists:join($,, [json(V) || V <- L]), $]];
json(B) when is_binary(B) -> [$", escape(B), $"];
json(I) when is_integer(I) -> integer_to_binary(I);
json(F) when is_float(F) -> float_to_binary(F, [short]);
json(true) -> <<"true">>;
json(false) -> <<"false">>;
json(null) -> <<"null">>.

escape(B) ->
    [case C of
         $" -> <<"\\\"">>;
         $\\ -> <<"\\\\">>;
         _ when C < 16#20 -> io_lib:format("\\u~4.16.0B", [C]);
         _ -> C
     end || <<C>> <= B].
