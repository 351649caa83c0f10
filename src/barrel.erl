%% @doc Barrel: an embeddable document database that keeps data in sync.
%%
%% Start the application, create a barrel, and work with documents:
%% ```
%% {ok, _} = application:ensure_all_started(barrel),
%% ok = barrel:create_barrel(<<"mybarrel">>, #{}),
%% {ok, Barrel} = barrel:open(<<"mybarrel">>),
%% {ok, DocId, Rev} = barrel:save_doc(Barrel, #{<<"key">> => <<"value">>}),
%% {ok, #{<<"id">> := DocId, <<"_rev">> := Rev}} = barrel:fetch_doc(Barrel, DocId),
%% {ok, DocId, Rev2} = barrel:save_doc(Barrel, #{<<"id">> => DocId, <<"_rev">> => Rev,
%%                                              <<"key">> => <<"new">>}),
%% {error, conflict} = barrel:save_doc(Barrel, #{<<"id">> => DocId, <<"_rev">> => Rev}),
%% {ok, DocId, _} = barrel:delete_doc(Barrel, DocId, Rev2),
%% {error, not_found} = barrel:fetch_doc(Barrel, DocId).
%% '''
%%
%% Documents are maps with binary keys (JSON objects). `<<"id">>' is the
%% document id (generated when absent), `<<"_rev">>' its revision
%% (`<<"Generation-Hash">>'), `<<"_deleted">>' marks a tombstone. Values are
%% binaries (UTF-8), integers from -2^63 to 2^64-1, floats, `true', `false',
%% `null' (or `nil'), proper lists and maps. Every error is returned as
%% `{error, Reason}'; the reasons are listed in README.md.
%%
%% Binary contents (attachments) go with a document revision, inline under
%% `<<"_attachments">>' or one at a time, streamed in and out chunk by chunk:
%% ```
%% {ok, Id, Rev1} = barrel:save_doc(Barrel, #{<<"_attachments">> =>
%%     #{<<"a.txt">> => #{<<"content_type">> => <<"text/plain">>, <<"data">> => <<"hi">>}}}),
%% {ok, Id, _Rev2} = barrel:put_attachment(Barrel, Id, Rev1, <<"b.bin">>, {file, "/tmp/b.bin"}),
%% {ok, <<"hi">>} = barrel:fetch_attachment(Barrel, Id, <<"a.txt">>).
%% '''
-module(barrel).

-export([create_barrel/2, open/1, close/1, delete_barrel/1, list_barrels/0, compact/0,
         store_info/0,
         barrel_infos/1,
         save_doc/2, save_doc/3, save_docs/2, save_docs/3,
         fetch_doc/2, fetch_doc/3, delete_doc/3, fold_docs/4,
         query/5, find/2, find/3, reindex/1,
         put_attachment/5, put_attachment/6, fetch_attachment/3, fetch_attachment/4,
         delete_attachment/4, attachment_info/3, attachment_info/4,
         attachment_stream/4, read_attachment/1, fold_attachment/6,
         attachment_writer/5, write_attachment/2, finish_attachment/1, cancel_attachment/1,
         changes/3, fold_changes/5, start_listener/2, stop_listener/1,
         start_http/1, stop_http/1, http_info/1,
         replicate/1, replicate/2, replication_info/1, cancel_replication/1]).
%% Shared with barrel_listener.
-export([check_options/3, is_pattern_list/1]).

-export_type([barrel/0, barrel_name/0, doc/0, docid/0, rev/0, reason/0,
              save_result/0, fold_fun/0, path/0, query_opts/0, scalar/0,
              change/0, seq/0, changes_opts/0, listener_opts/0,
              attachment_name/0, attachment_content/0, attachment_opts/0, attachment_info/0,
              attachment_stream/0, attachment_writer/0]).

-type barrel() :: reference().
%% An open barrel handle (a NIF resource), from {@link open/1}.
-type barrel_name() :: binary().
%% 1 to 128 bytes of ASCII letters, digits, `_', `-' and `.', starting with a
%% letter or digit.
-type doc() :: #{binary() => term()}.
%% A JSON object as a map with binary keys.
-type docid() :: binary().
%% 1 to 1024 bytes of UTF-8, not starting with `_'.
-type rev() :: binary().
%% `<<"Generation-Hash">>', e.g. `<<"1-967a00dff5e02add41819138abb3284d">>'.
-type reason() :: not_found | already_exists | conflict | closed
                | {invalid_name, term()} | {bad_param, term()}
                | {invalid_doc_id, term()} | {bad_rev, term()}
                | {bad_doc, term()} | {bad_option, term()} | {bad_arg, atom()}
                | {bad_query, term()} | {bad_pattern, term()}
                | {bad_attachment, binary()} | {missing_stub, binary()}
                | {attachment_too_large, non_neg_integer()} | {file_error, term()}
                | {storage_error, binary()} | {corrupt, binary()}
                | {internal_error, binary()}.
%% The README lists when each is returned. Terms the caller passed (a name, an
%% id, a rev, an option) come back as given.
-type save_result() :: {ok, docid(), rev()} | {error, reason()}.
-type fold_fun() :: fun((doc(), Acc :: term()) -> {ok, term()} | {stop, term()} | stop).
-type path() :: binary() | [binary() | non_neg_integer() | '*'].
%% A field: `<<"$/locations/*/country">>' or ``[<<"locations">>, '*', <<"country">>]''.
%% Digits are array indexes, `*' any array index.
-type scalar() :: binary() | number() | boolean() | null | nil.
-type query_opts() :: #{equal => scalar(), prefix => binary(),
                        start_at => scalar(), end_at => scalar(),
                        start_inclusive => boolean(), end_inclusive => boolean(),
                        limit => non_neg_integer() | infinity, descending => boolean(),
                        include_docs => boolean(), null => atom()}.

-type seq() :: non_neg_integer().
%% A barrel's sequence number: every committed document write takes the next one.
-type change() :: #{binary() => term()}.
%% `#{<<"id">> => DocId, <<"rev">> => WinningRev, <<"seq">> => Seq,
%% <<"changes">> => [Rev]}', plus `<<"deleted">> => true' for a deletion and
%% `<<"doc">> => Doc' with `include_docs'.
-type changes_opts() :: #{include_docs => boolean(), style => main_only | all_docs,
                          limit => non_neg_integer() | infinity, descending => boolean(),
                          filter => binary() | [binary()], null => atom()}.
-type listener_opts() :: #{subscribe_to => [binary()], since => seq() | now,
                           callback_fun => fun((change()) -> term()), to => pid(),
                           include_docs => boolean(), style => main_only | all_docs,
                           max_queue => pos_integer(), window => pos_integer(),
                           null => atom()}.

-type attachment_name() :: binary().
%% 1 to 1024 bytes of UTF-8, not starting with `_'.
-type attachment_content() :: binary()
                            | {stream, fun(() -> {ok, iodata()} | eof | {error, term()})}
                            | {file, file:name_all()}.
%% What {@link put_attachment/6} writes: the content itself, a function
%% giving it chunk by chunk, or a file read chunk by chunk.
-type attachment_opts() :: #{content_type => binary(), digest => binary(),
                             length => non_neg_integer(), max_size => non_neg_integer()}.
-type attachment_info() :: #{content_type := binary(), revpos := pos_integer(),
                             digest => binary(), length => non_neg_integer(),
                             url => binary()}.
%% An attachment's stub: `digest' (`<<"md5-", Base64/binary>>') and `length'
%% for a content stored here, `url' for a linked attachment.
-type attachment_stream() :: reference().
%% An attachment being read, from {@link attachment_stream/4}.
-type attachment_writer() :: reference().
%% An attachment being written, from {@link attachment_writer/5}.

-define(FOLD_CHUNK, 256).
-define(FILE_CHUNK, 1048576).
-define(CHANGES_CHUNK, 256).
-define(SEQ_MAX, 18446744073709551615).

-define(NIF(Call, What),
        try Call
        catch error:badarg -> {error, {bad_arg, What}}
        end).

%% ---------------------------------------------------------------------------
%% Barrels
%% ---------------------------------------------------------------------------

%% @doc Creates a barrel. `Params' (all optional):
%% <ul>
%% <li>`revs_limit' (default 1000): revisions kept per branch of a
%%     document's history.</li>
%% <li>`sync' (default `false'): fsync every commit. With `false' a commit
%%     survives a VM crash but the last writes may be lost on power failure.</li>
%% </ul>
%% Other keys (such as the talk's `store_provider') are accepted and ignored.
%% ```
%% ok = barrel:create_barrel(<<"mybarrel">>, #{revs_limit => 100}),
%% {error, already_exists} = barrel:create_barrel(<<"mybarrel">>, #{}).
%% '''
-spec create_barrel(barrel_name(), map()) -> ok | {error, reason()}.
create_barrel(Name, Params) when is_binary(Name), is_map(Params) ->
    ?NIF(barrel_nif:create_barrel(Name, Params), name);
create_barrel(Name, Params) when is_binary(Name) ->
    {error, {bad_param, Params}};
create_barrel(Name, _Params) ->
    {error, {invalid_name, Name}}.

%% @doc Opens a handle on an existing barrel.
%% ```
%% {ok, Barrel} = barrel:open(<<"mybarrel">>),
%% {error, not_found} = barrel:open(<<"nope">>).
%% '''
-spec open(barrel_name()) -> {ok, barrel()} | {error, reason()}.
open(Name) when is_binary(Name) ->
    ?NIF(barrel_nif:open_barrel(Name), name);
open(Name) ->
    {error, {invalid_name, Name}}.

%% @doc Closes a handle; later calls with it return `{error, closed}'. Other
%% handles on the same barrel are not affected.
-spec close(barrel()) -> ok | {error, reason()}.
close(Barrel) ->
    ?NIF(barrel_nif:close_barrel(Barrel), barrel).

%% @doc Deletes a barrel and all its documents. Handles still open on it
%% return `{error, not_found}'.
-spec delete_barrel(barrel_name()) -> ok | {error, reason()}.
delete_barrel(Name) when is_binary(Name) ->
    ?NIF(barrel_nif:delete_barrel(Name), name);
delete_barrel(Name) ->
    {error, {invalid_name, Name}}.

%% @doc Compacts the node's store now, on a dirty scheduler (it may take a
%% while on a large store): the space of deleted barrels comes back (it
%% otherwise comes back only as RocksDB's compactions reach it). Removed
%% attachment contents and deleted documents need no call: RocksDB compacts
%% them in the background.
%% ```
%% ok = barrel:delete_barrel(<<"old">>),
%% ok = barrel:compact().
%% '''
-spec compact() -> ok | {error, reason()}.
compact() ->
    barrel_nif:store_compact().

%% @doc The store's background work right now: what still runs after writes
%% have returned. `index_queue' (committed documents whose path-index entries
%% are not written yet; queries wait for them), RocksDB's `flushes_running',
%% `compactions_running', `flush_pending', `compaction_pending' (a level is
%% over its target size), `pending_compaction_bytes' (RocksDB's estimate of
%% what compactions still have to rewrite) and `memtable_bytes', summed over
%% the store; `idle' is `true' when nothing runs or is due. For monitoring
%% (a `pending_compaction_bytes' that keeps growing means writes outpace the
%% disk) and for benchmarks that start from a store at rest. `{error, closed}'
%% when the store is not open (the `barrel' application is not running).
%% ```
%% {ok, #{idle := Idle, index_queue := Queued}} = barrel:store_info().
%% '''
-spec store_info() -> {ok, #{idle := boolean(), index_queue := non_neg_integer(),
                             flushes_running := non_neg_integer(),
                             compactions_running := non_neg_integer(),
                             flush_pending := boolean(), compaction_pending := boolean(),
                             pending_compaction_bytes := non_neg_integer(),
                             memtable_bytes := non_neg_integer()}}
                      | {error, reason()}.
store_info() ->
    barrel_nif:store_info().

%% @doc Names of all barrels of this node, sorted.
-spec list_barrels() -> [barrel_name()] | {error, reason()}.
list_barrels() ->
    case barrel_nif:list_barrels() of
        {ok, Names} -> Names;
        Error -> Error
    end.

%% @doc Counters and settings of a barrel, by name or handle:
%% `docs_count' (live documents), `deleted_count' (deleted documents),
%% `updated_seq' (sequence of the last change), `data_size' (bytes of stored
%% documents before compression), `disk_size' (approximate bytes of flushed
%% data on disk), `revs_limit', `sync', `name'.
%% ```
%% {ok, #{docs_count := 0, updated_seq := 0}} = barrel:barrel_infos(<<"mybarrel">>).
%% '''
-spec barrel_infos(barrel_name() | barrel()) -> {ok, map()} | {error, reason()}.
barrel_infos(Name) when is_binary(Name) ->
    ?NIF(barrel_nif:barrel_info(Name), name);
barrel_infos(Barrel) when is_reference(Barrel) ->
    ?NIF(barrel_nif:barrel_info(Barrel), barrel);
barrel_infos(Other) ->
    {error, {invalid_name, Other}}.

%% ---------------------------------------------------------------------------
%% Documents
%% ---------------------------------------------------------------------------

%% @equiv save_doc(Barrel, Doc, #{})
-spec save_doc(barrel(), doc()) -> save_result().
save_doc(Barrel, Doc) ->
    ?NIF(save(Barrel, Doc, true), barrel).

%% @doc Saves a document and returns its id and new revision.
%%
%% Without `<<"_rev">>' the document is created (with a generated id when
%% `<<"id">>' is absent); saving without `_rev' over a live document returns
%% `{error, conflict}'. To update, pass the current `_rev'; a `_rev' that is not
%% a current leaf revision returns `{error, conflict}'. A deleted document can
%% be created again without `_rev'.
%%
%% Options: `new_edits' (default `true'); with `false' the document is stored
%% as the revision given in `_rev', with its history in `_revisions'
%% (`#{<<"start">> => N, <<"ids">> => [Hash, ...]}'), creating a conflict
%% branch instead of refusing it: this is how replication writes.
%%
%% Attachments go under `<<"_attachments">>', one map per name, with the raw
%% bytes as a binary under `<<"data">>' (not base64) and optionally
%% `<<"content_type">>' (default `<<"application/octet-stream">>'),
%% `<<"digest">>' and `<<"length">>' (checked against the data). They are
%% stored as stubs (see {@link attachment_info/4}); a stub sent back
%% (`#{<<"stub">> => true}', as fetched) keeps the attachment, and an
%% attachment left out is removed. `#{<<"url">> => Url}' links to a content
%% kept elsewhere. A document with attachments is written from a dirty
%% scheduler.
%% ```
%% {ok, Id, Rev1} = barrel:save_doc(Barrel, #{<<"id">> => <<"a">>, <<"v">> => 1}),
%% {ok, Id, Rev2} = barrel:save_doc(Barrel, #{<<"id">> => Id, <<"_rev">> => Rev1, <<"v">> => 2}),
%% {error, conflict} = barrel:save_doc(Barrel, #{<<"id">> => Id, <<"_rev">> => Rev1}).
%% '''
-spec save_doc(barrel(), doc(), map()) -> save_result().
save_doc(Barrel, Doc, #{p2p_write := Hop} = Opts) ->
    case p2p_hops(Hop, p2p_write) of
        {ok, Hops} ->
            case save_doc(Barrel, Doc, maps:remove(p2p_write, Opts)) of
                {ok, Id, Rev} -> p2p_write(Barrel, Id, Rev, Hops);
                Error -> Error
            end;
        Error ->
            Error
    end;
save_doc(Barrel, Doc, Opts) ->
    case save_options(Opts) of
        {ok, NewEdits} -> ?NIF(save(Barrel, Doc, NewEdits), barrel);
        Error -> Error
    end.

%% @equiv save_docs(Barrel, Docs, #{})
-spec save_docs(barrel(), [doc()]) -> {ok, [save_result()]} | {error, reason()}.
save_docs(Barrel, Docs) ->
    save_docs(Barrel, Docs, #{}).

%% @doc Saves many documents in one atomic write and returns one result per
%% document, in order. A document that is refused (conflict, bad input) does
%% not stop the others. Options as for {@link save_doc/3}.
%% ```
%% {ok, [{ok, <<"a">>, _}, {error, conflict}]} =
%%     barrel:save_docs(Barrel, [#{<<"id">> => <<"a">>}, #{<<"id">> => <<"a">>}]).
%% '''
-spec save_docs(barrel(), [doc()], map()) -> {ok, [save_result()]} | {error, reason()}.
save_docs(Barrel, Docs, Opts) when is_list(Docs) ->
    case is_proper_list(Docs) andalso save_options(Opts) of
        false -> {error, {bad_arg, docs}};
        {ok, NewEdits} -> ?NIF(save_many(Barrel, Docs, NewEdits), barrel_or_docs);
        Error -> Error
    end;
save_docs(_Barrel, _Docs, _Opts) ->
    {error, {bad_arg, docs}}.

%% Writes are queued to the store's writer thread from the calling scheduler,
%% and the result comes back as a message: no scheduler thread blocks while
%% the batch commits. Documents too big to convert within a short budget go
%% through the dirty NIF instead.
save(Barrel, Doc, NewEdits) ->
    Ref = make_ref(),
    case barrel_nif:save_doc_async(Barrel, Doc, NewEdits, Ref) of
        ok -> receive {Ref, Result} -> Result end;
        would_block -> barrel_nif:save_doc(Barrel, Doc, NewEdits);
        Result -> Result
    end.

save_many(Barrel, Docs, NewEdits) ->
    Ref = make_ref(),
    case barrel_nif:save_docs_async(Barrel, Docs, NewEdits, Ref) of
        ok -> receive {Ref, Result} -> Result end;
        would_block -> barrel_nif:save_docs(Barrel, Docs, NewEdits);
        Result -> Result
    end.

save_options(Opts) when is_map(Opts) ->
    maps:fold(fun(new_edits, V, {ok, _}) when is_boolean(V) -> {ok, V};
                 (K, V, {ok, _}) -> {error, {bad_option, {K, V}}};
                 (_, _, Error) -> Error
              end, {ok, true}, Opts);
save_options(Opts) ->
    {error, {bad_option, Opts}}.

%% @equiv fetch_doc(Barrel, DocId, #{})
-spec fetch_doc(barrel(), docid()) -> {ok, doc()} | {error, reason()}.
fetch_doc(Barrel, DocId) ->
    ?NIF(fetch(Barrel, DocId, undefined, false, false, null), barrel).

%% @doc Fetches a document: its winning revision with `<<"id">>' and
%% `<<"_rev">>'. A deleted document returns `{error, not_found}'.
%%
%% Options:
%% <ul>
%% <li>`rev => Rev': that revision instead of the winner. Any current leaf
%%     can be read, including a deleted one (with `<<"_deleted">> => true');
%%     older revisions are not kept.</li>
%% <li>`revs => true': adds `<<"_revisions">>', the revision history.</li>
%% <li>`conflicts => true': adds `<<"_conflicts">>', the other live leaf
%%     revisions, when there are any.</li>
%% <li>`attachments => true': each attachment stored here comes with its
%%     content, `<<"data">> => Binary', instead of `<<"stub">> => true' (linked
%%     ones stay as they are). Every content is read whole:
%%     {@link attachment_stream/4} reads a big one in chunks.</li>
%% <li>`open_revs => all | [Rev]': returns `{ok, [{ok, Doc} | {missing, Rev}]}'
%%     for every leaf (deleted ones included) or for the given revisions;
%%     `rev', `conflicts' and `attachments' do not apply then.</li>
%% <li>`null => Atom': the atom JSON null is returned as (default `null').</li>
%% </ul>
%% ```
%% {ok, #{<<"_revisions">> := #{<<"start">> := 2}}} =
%%     barrel:fetch_doc(Barrel, <<"a">>, #{revs => true}).
%% '''
-spec fetch_doc(barrel(), docid(), map()) ->
          {ok, doc()} | {ok, [{ok, doc()} | {missing, rev()}]} | {error, reason()}.
fetch_doc(Barrel, DocId, #{p2p_read := Hop} = Opts) ->
    case {p2p_hops(Hop, p2p_read), maps:get(cache, Opts, false)} of
        {{ok, _}, Cache} when not is_boolean(Cache) ->
            {error, {bad_option, {cache, Cache}}};
        {{ok, Hops}, _} ->
            Local = maps:without([p2p_read, cache], Opts),
            case fetch_doc(Barrel, DocId, Local) of
                {error, not_found} ->
                    p2p_read(Barrel, DocId, Hops, maps:get(cache, Opts, false),
                             maps:get(null, Opts, null));
                Other ->
                    Other
            end;
        {Error, _} ->
            Error
    end;
fetch_doc(Barrel, DocId, Opts) when is_map(Opts) ->
    Defaults = #{rev => undefined, revs => false, conflicts => false,
                 attachments => false, open_revs => undefined, null => null},
    case check_options(Opts, Defaults, fun fetch_option_ok/2) of
        {ok, #{open_revs := undefined, attachments := true, rev := Rev, revs := Revs,
               conflicts := Conflicts, null := Null}} ->
            ?NIF(barrel_nif:fetch_doc_attachments(Barrel, DocId, Rev, Revs, Conflicts, Null),
                 barrel);
        {ok, #{open_revs := undefined, rev := Rev, revs := Revs,
               conflicts := Conflicts, null := Null}} ->
            ?NIF(fetch(Barrel, DocId, Rev, Revs, Conflicts, Null), barrel);
        {ok, #{open_revs := Which, revs := Revs, null := Null}} ->
            ?NIF(barrel_nif:fetch_open_revs(Barrel, DocId, Which, Revs, Null), barrel);
        Error ->
            Error
    end;
fetch_doc(_Barrel, _DocId, Opts) ->
    {error, {bad_option, Opts}}.

%% Documents in memory are answered on the calling scheduler; the dirty NIF
%% only runs when the read needs disk I/O.
fetch(Barrel, DocId, Rev, Revs, Conflicts, Null) ->
    case barrel_nif:fetch_doc_cached(Barrel, DocId, Rev, Revs, Conflicts, Null) of
        would_block -> barrel_nif:fetch_doc(Barrel, DocId, Rev, Revs, Conflicts, Null);
        Result -> Result
    end.

fetch_option_ok(rev, V) -> is_binary(V);
fetch_option_ok(revs, V) -> is_boolean(V);
fetch_option_ok(conflicts, V) -> is_boolean(V);
fetch_option_ok(attachments, V) -> is_boolean(V);
fetch_option_ok(open_revs, all) -> true;
fetch_option_ok(open_revs, V) -> is_proper_list(V) andalso lists:all(fun is_binary/1, V);
fetch_option_ok(null, V) -> is_atom(V).

%% @doc Deletes a document by writing a tombstone on top of `Rev' (its current
%% revision). The document then fetches as `{error, not_found}' and can be
%% created again; the tombstone replicates like any revision. `Rev' may be any
%% leaf: deleting a conflicting branch resolves the conflict, and deleting a
%% tombstone's own revision writes another tombstone (as in CouchDB).
%% ```
%% {ok, <<"a">>, DelRev} = barrel:delete_doc(Barrel, <<"a">>, Rev).
%% '''
-spec delete_doc(barrel(), docid(), rev()) -> save_result().
delete_doc(Barrel, DocId, Rev) ->
    Ref = make_ref(),
    case ?NIF(barrel_nif:delete_doc_async(Barrel, DocId, Rev, Ref), barrel) of
        ok -> receive {Ref, Result} -> Result end;
        Result -> Result
    end.

%% @doc Folds over the live documents of a barrel in id order (bytewise UTF-8
%% order), reading one consistent snapshot per chunk of 256 documents.
%%
%% `Fun(Doc, Acc)' returns `{ok, Acc1}' to go on, `{stop, Acc1}' or `stop' to
%% end. Options:
%% <ul>
%% <li>`start_key => DocId': first id (inclusive).</li>
%% <li>`end_key => DocId': last id (inclusive unless `inclusive_end => false').</li>
%% <li>`limit => N': at most N documents.</li>
%% <li>`include_docs' (default `true'): with `false', `Doc' is only
%%     `#{<<"id">> => Id, <<"_rev">> => Rev}'.</li>
%% <li>`null => Atom': the atom JSON null is returned as (default `null').</li>
%% </ul>
%% ```
%% {ok, Ids} = barrel:fold_docs(Barrel, fun(#{<<"id">> := Id}, Acc) -> {ok, [Id | Acc]} end,
%%                              [], #{include_docs => false}).
%% '''
-spec fold_docs(barrel(), fold_fun(), term(), map()) -> {ok, term()} | {error, reason()}.
fold_docs(Barrel, Fun, Acc, Opts) when is_function(Fun, 2), is_map(Opts) ->
    Defaults = #{start_key => undefined, end_key => undefined, inclusive_end => true,
                 limit => infinity, include_docs => true, null => null},
    case check_options(Opts, Defaults, fun fold_option_ok/2) of
        {ok, #{start_key := S, end_key := E, inclusive_end := Incl, limit := Limit,
               include_docs := Docs, null := Null}} ->
            Start = case S of undefined -> undefined; _ -> {S, inclusive} end,
            End = case {E, Incl} of
                      {undefined, _} -> undefined;
                      {_, true} -> {E, inclusive};
                      {_, false} -> {E, exclusive}
                  end,
            fold_chunks(Barrel, Fun, Acc, Start, End, Limit, Docs, Null);
        Error ->
            Error
    end;
fold_docs(_Barrel, Fun, _Acc, Opts) when is_function(Fun, 2) ->
    {error, {bad_option, Opts}};
fold_docs(_Barrel, _Fun, _Acc, _Opts) ->
    {error, {bad_arg, fold_fun}}.

fold_option_ok(start_key, V) -> is_binary(V);
fold_option_ok(end_key, V) -> is_binary(V);
fold_option_ok(inclusive_end, V) -> is_boolean(V);
fold_option_ok(limit, V) -> is_integer(V) andalso V >= 0;
fold_option_ok(include_docs, V) -> is_boolean(V);
fold_option_ok(null, V) -> is_atom(V).

fold_chunks(_Barrel, _Fun, Acc, _Start, _End, 0, _Docs, _Null) ->
    {ok, Acc};
fold_chunks(Barrel, Fun, Acc, Start, End, Limit, Docs, Null) ->
    N = case Limit of infinity -> ?FOLD_CHUNK; _ -> min(Limit, ?FOLD_CHUNK) end,
    case ?NIF(barrel_nif:fold_docs_chunk(Barrel, Start, End, N, Docs, Null), barrel) of
        {ok, Rows, Last} ->
            case apply_fold(Fun, Rows, Acc) of
                {stop, Acc1} ->
                    {ok, Acc1};
                {ok, Acc1} when Last =:= undefined ->
                    {ok, Acc1};
                {ok, Acc1} ->
                    Left = case Limit of infinity -> infinity; _ -> Limit - N end,
                    fold_chunks(Barrel, Fun, Acc1, {Last, exclusive}, End, Left, Docs, Null)
            end;
        Error ->
            Error
    end.

apply_fold(_Fun, [], Acc) ->
    {ok, Acc};
apply_fold(Fun, [Row | Rows], Acc) ->
    case Fun(Row, Acc) of
        {ok, Acc1} -> apply_fold(Fun, Rows, Acc1);
        {stop, Acc1} -> {stop, Acc1};
        stop -> {stop, Acc};
        Other -> erlang:error({bad_fold_return, Other})
    end.

is_proper_list(L) ->
    try length(L) of _ -> true
    catch error:badarg -> false
    end.

%% ---------------------------------------------------------------------------
%% Attachments
%% ---------------------------------------------------------------------------

%% @equiv put_attachment(Barrel, DocId, Rev, Name, Content, #{})
-spec put_attachment(barrel(), docid(), rev() | undefined, attachment_name(),
                     attachment_content()) -> save_result().
put_attachment(Barrel, DocId, Rev, Name, Content) ->
    put_attachment(Barrel, DocId, Rev, Name, Content, #{}).

%% @doc Adds (or replaces) attachment `Name' of a document, in a new revision
%% on top of `Rev', and returns the document's id and new revision. With
%% `Rev = undefined' the document is created with only this attachment (it
%% must not exist, or be deleted: else `{error, conflict}').
%%
%% `Content' is the content as a binary, `{stream, Fun}' where each `Fun()'
%% returns the next chunk, `{ok, Chunk}' (iodata), then `eof' (or
%% `{error, Reason}' to give up, returned as is), or `{file, Path}', read in
%% chunks of 1 MiB (a file that cannot be read gives
%% `{error, {file_error, Reason}}'). Chunks are written as they come: the
%% whole content is never held in memory.
%%
%% Options: `content_type' (default `<<"application/octet-stream">>'),
%% `digest' (`<<"md5-", Base64/binary>>') and `length' (bytes), checked once
%% the content is written (`{error, {bad_attachment, Why}}' on a mismatch),
%% and `max_size' (bytes, default 16 GiB): a longer content stops the write
%% with `{error, {attachment_too_large, MaxSize}}'. When a write fails
%% nothing is saved, the document keeps its current revision, and what was
%% written is deleted.
%% ```
%% {ok, Fd} = file:open("photo.png", [read, raw, binary]),
%% {ok, Id, Rev2} = barrel:put_attachment(Barrel, Id, Rev1, <<"photo.png">>,
%%                                        {stream, fun() -> file:read(Fd, 65536) end},
%%                                        #{content_type => <<"image/png">>}),
%% {ok, <<"new">>, _} = barrel:put_attachment(Barrel, <<"new">>, undefined, <<"a.txt">>,
%%                                            <<"hello">>, #{length => 5}).
%% '''
-spec put_attachment(barrel(), docid(), rev() | undefined, attachment_name(),
                     attachment_content(), attachment_opts()) -> save_result().
put_attachment(Barrel, DocId, Rev, Name, Content, Opts) ->
    case content_source(Content) of
        {ok, Source} ->
            try put_source(Barrel, DocId, Rev, Name, Source, Opts)
            after close_source(Source)
            end;
        Error ->
            Error
    end.

content_source(Content) when is_binary(Content) ->
    {ok, Content};
content_source({stream, Fun} = Content) when is_function(Fun, 0) ->
    {ok, Content};
content_source({file, Path}) ->
    try file:open(Path, [read, raw, binary]) of
        {ok, Fd} -> {ok, {fd, Fd}};
        {error, Reason} -> {error, {file_error, Reason}}
    catch error:_ -> {error, {bad_arg, content}}
    end;
content_source(_) ->
    {error, {bad_arg, content}}.

close_source({fd, Fd}) -> file:close(Fd);
close_source(_) -> ok.

put_source(Barrel, DocId, Rev, Name, Bin, Opts) when is_binary(Bin) ->
    %% Two dirty calls: the writer, then the content with the finish (which
    %% ends the writer whatever the outcome).
    case attachment_writer(Barrel, DocId, Rev, Name, Opts) of
        {ok, Writer} -> ?NIF(barrel_nif:att_writer_finish(Writer, Bin), writer);
        Error -> Error
    end;
put_source(Barrel, DocId, Rev, Name, Source, Opts) ->
    case attachment_writer(Barrel, DocId, Rev, Name, Opts) of
        {ok, Writer} ->
            %% Cancelling after the finish is a no-op; after a failure or an
            %% exception it deletes what was written at once.
            try write_source(Writer, Source) of
                ok -> finish_attachment(Writer);
                Error -> Error
            after
                cancel_attachment(Writer)
            end;
        Error ->
            Error
    end.

write_source(Writer, {stream, Fun}) ->
    write_chunks(Writer, Fun);
write_source(Writer, {fd, Fd}) ->
    write_chunks(Writer, fun() ->
                                 case file:read(Fd, ?FILE_CHUNK) of
                                     {error, Reason} -> {error, {file_error, Reason}};
                                     Other -> Other
                                 end
                         end).

write_chunks(Writer, Fun) ->
    case Fun() of
        {ok, Chunk} ->
            case write_attachment(Writer, Chunk) of
                ok -> write_chunks(Writer, Fun);
                Error -> Error
            end;
        eof ->
            ok;
        {error, _} = Error ->
            Error;
        Other ->
            erlang:error({bad_stream_return, Other})
    end.

%% @doc Starts writing attachment `Name' of a document chunk by chunk, for
%% callers that receive the content piece by piece (an upload arriving as
%% messages, say): {@link write_attachment/2} each chunk, then
%% {@link finish_attachment/1} to save it in a new revision, or
%% {@link cancel_attachment/1} to give up. `Rev' and `Opts' are as for
%% {@link put_attachment/6}, which is built on these; the document id, `Rev',
%% the name and the options are checked here, before any content is written.
%% A writer abandoned without finishing is cancelled when it is garbage
%% collected.
%% ```
%% {ok, W} = barrel:attachment_writer(Barrel, Id, Rev1, <<"log.txt">>, #{}),
%% ok = barrel:write_attachment(W, <<"line 1\n">>),
%% ok = barrel:write_attachment(W, [<<"line ">>, <<"2\n">>]),
%% {ok, Id, Rev2} = barrel:finish_attachment(W).
%% '''
-spec attachment_writer(barrel(), docid(), rev() | undefined, attachment_name(),
                        attachment_opts()) -> {ok, attachment_writer()} | {error, reason()}.
attachment_writer(Barrel, DocId, Rev, Name, Opts) when is_map(Opts) ->
    Defaults = #{content_type => undefined, digest => undefined, length => undefined,
                 max_size => undefined},
    case check_options(Opts, Defaults, fun attachment_option_ok/2) of
        {ok, #{content_type := Type, digest := Digest, length := Length, max_size := Max}} ->
            ?NIF(barrel_nif:att_writer_open(Barrel, DocId, Rev, Name, Type, Digest, Length, Max),
                 barrel);
        Error ->
            Error
    end;
attachment_writer(_Barrel, _DocId, _Rev, _Name, Opts) ->
    {error, {bad_option, Opts}}.

attachment_option_ok(content_type, V) -> is_binary(V);
attachment_option_ok(digest, V) -> is_binary(V);
attachment_option_ok(length, V) -> is_integer(V) andalso V >= 0;
attachment_option_ok(max_size, V) -> is_integer(V) andalso V >= 0.

%% @doc Appends a chunk (iodata) to the content of a writer from
%% {@link attachment_writer/5}: `ok', or `{error, {attachment_too_large, Max}}'
%% past `max_size'.
-spec write_attachment(attachment_writer(), iodata()) -> ok | {error, reason()}.
write_attachment(Writer, Chunk) when is_binary(Chunk) ->
    ?NIF(barrel_nif:att_writer_write(Writer, Chunk), writer);
write_attachment(Writer, Chunk) ->
    try iolist_to_binary(Chunk) of
        Bin -> write_attachment(Writer, Bin)
    catch error:badarg -> {error, {bad_arg, chunk}}
    end.

%% @doc Ends the content of a writer, checks it against the `digest' and
%% `length' options, and saves it as the attachment in a new revision of the
%% document: `{ok, DocId, NewRev}'. On an error nothing is saved.
-spec finish_attachment(attachment_writer()) -> save_result().
finish_attachment(Writer) ->
    ?NIF(barrel_nif:att_writer_finish(Writer, <<>>), writer).

%% @doc Abandons a writer: what it wrote is deleted now. Does nothing on a
%% writer already finished or cancelled.
-spec cancel_attachment(attachment_writer()) -> ok | {error, reason()}.
cancel_attachment(Writer) ->
    ?NIF(barrel_nif:att_writer_cancel(Writer), writer).

%% @equiv fetch_attachment(Barrel, DocId, Name, #{})
-spec fetch_attachment(barrel(), docid(), attachment_name()) ->
          {ok, binary() | {url, binary()}} | {error, reason()}.
fetch_attachment(Barrel, DocId, Name) ->
    fetch_attachment(Barrel, DocId, Name, #{}).

%% @doc The whole content of attachment `Name' of a document's winning
%% revision (or of the leaf `rev => Rev'): `{ok, Binary}', or
%% `{ok, {url, Url}}' for a linked attachment. `{error, not_found}' when the
%% document or the attachment does not exist. For big contents,
%% {@link attachment_stream/4} reads in chunks.
%% ```
%% {ok, <<"hello">>} = barrel:fetch_attachment(Barrel, <<"a">>, <<"hello.txt">>),
%% {ok, {url, <<"https://example.com/a.png">>}} =
%%     barrel:fetch_attachment(Barrel, <<"a">>, <<"linked.png">>, #{rev => Rev}).
%% '''
-spec fetch_attachment(barrel(), docid(), attachment_name(), #{rev => rev()}) ->
          {ok, binary() | {url, binary()}} | {error, reason()}.
fetch_attachment(Barrel, DocId, Name, Opts) ->
    case rev_option(Opts) of
        {ok, Rev} -> ?NIF(barrel_nif:att_fetch(Barrel, DocId, Name, Rev), barrel);
        Error -> Error
    end.

rev_option(Opts) when is_map(Opts) ->
    case check_options(Opts, #{rev => undefined}, fun(rev, V) -> is_binary(V) end) of
        {ok, #{rev := Rev}} -> {ok, Rev};
        Error -> Error
    end;
rev_option(Opts) ->
    {error, {bad_option, Opts}}.

%% @doc Removes attachment `Name' of a document, in a new revision on top of
%% `Rev': `{ok, DocId, NewRev}'. `{error, not_found}' when that revision has
%% no such attachment, `{error, conflict}' when `Rev' is not a current leaf.
%% ```
%% {ok, <<"a">>, Rev2} = barrel:delete_attachment(Barrel, <<"a">>, Rev1, <<"hello.txt">>).
%% '''
-spec delete_attachment(barrel(), docid(), rev(), attachment_name()) -> save_result().
delete_attachment(Barrel, DocId, Rev, Name) ->
    ?NIF(barrel_nif:att_delete(Barrel, DocId, Rev, Name), barrel).

%% @equiv attachment_info(Barrel, DocId, Name, #{})
-spec attachment_info(barrel(), docid(), attachment_name()) ->
          {ok, attachment_info()} | {error, reason()}.
attachment_info(Barrel, DocId, Name) ->
    attachment_info(Barrel, DocId, Name, #{}).

%% @doc What a revision records of attachment `Name' (the winner, or the leaf
%% `rev => Rev'): `content_type', `revpos' (the generation of the revision
%% that last changed it), and `digest' and `length' for a content stored
%% here or `url' for a linked one.
%% ```
%% {ok, #{content_type := <<"text/plain">>, length := 5, revpos := 1,
%%        digest := <<"md5-XUFAKrxLKna5cZ2REBfFkg==">>}} =
%%     barrel:attachment_info(Barrel, <<"a">>, <<"hello.txt">>).
%% '''
-spec attachment_info(barrel(), docid(), attachment_name(), #{rev => rev()}) ->
          {ok, attachment_info()} | {error, reason()}.
attachment_info(Barrel, DocId, Name, Opts) ->
    case rev_option(Opts) of
        {ok, Rev} -> ?NIF(barrel_nif:att_info(Barrel, DocId, Name, Rev), barrel);
        Error -> Error
    end.

%% @doc Opens attachment `Name' of a document for reading chunk by chunk with
%% {@link read_attachment/1}: `{ok, Stream, Info}', `Info' as from
%% {@link attachment_info/4}. Options: `rev' (a leaf revision instead of the
%% winner) and `range => {Start, End}': only bytes `Start' up to, not
%% including, `End' (clamped to the length). A linked attachment has no
%% content here: `{error, not_found}' (its `url' is in its info). An open
%% stream keeps its content readable to the end even if the document is
%% updated without it or deleted meanwhile (the content is removed once the
%% stream is closed or garbage collected).
%% ```
%% {ok, S, #{length := 5}} = barrel:attachment_stream(Barrel, <<"a">>, <<"hello.txt">>,
%%                                                    #{range => {1, 3}}),
%% {ok, <<"el">>} = barrel:read_attachment(S),
%% eof = barrel:read_attachment(S).
%% '''
-spec attachment_stream(barrel(), docid(), attachment_name(),
                        #{rev => rev(), range => {non_neg_integer(), non_neg_integer()}}) ->
          {ok, attachment_stream(), attachment_info()} | {error, reason()}.
attachment_stream(Barrel, DocId, Name, Opts) when is_map(Opts) ->
    case check_options(Opts, #{rev => undefined, range => undefined}, fun stream_option_ok/2) of
        {ok, #{rev := Rev, range := Range}} ->
            ?NIF(barrel_nif:att_reader_open(Barrel, DocId, Name, Rev, Range), barrel);
        Error ->
            Error
    end;
attachment_stream(_Barrel, _DocId, _Name, Opts) ->
    {error, {bad_option, Opts}}.

stream_option_ok(rev, V) -> is_binary(V);
stream_option_ok(range, {S, E}) -> is_integer(S) andalso is_integer(E) andalso 0 =< S
                                       andalso S =< E;
stream_option_ok(range, _) -> false.

%% @doc The next chunk (at most 128 KiB) of an attachment opened with
%% {@link attachment_stream/4}: `{ok, Binary}', then `eof' at the end.
-spec read_attachment(attachment_stream()) -> {ok, binary()} | eof | {error, reason()}.
read_attachment(Stream) ->
    ?NIF(barrel_nif:att_reader_read(Stream), stream).

%% @doc Folds over the content of attachment `Name' chunk by chunk (options as
%% for {@link attachment_stream/4}): `Fun(Chunk, Acc)' returns `{ok, Acc1}' to
%% go on, `{stop, Acc1}' or `stop' to end. Returns `{ok, Acc}'.
%% ```
%% {ok, Ctx} = barrel:fold_attachment(Barrel, <<"a">>, <<"big.bin">>,
%%     fun(Chunk, C) -> {ok, crypto:hash_update(C, Chunk)} end, crypto:hash_init(md5), #{}),
%% Md5 = crypto:hash_final(Ctx).
%% '''
-spec fold_attachment(barrel(), docid(), attachment_name(),
                      fun((binary(), Acc) -> {ok, Acc} | {stop, Acc} | stop), Acc, map()) ->
          {ok, Acc} | {error, reason()}.
fold_attachment(Barrel, DocId, Name, Fun, Acc, Opts) when is_function(Fun, 2) ->
    case attachment_stream(Barrel, DocId, Name, Opts) of
        {ok, Stream, _Info} -> fold_stream(Stream, Fun, Acc);
        Error -> Error
    end;
fold_attachment(_Barrel, _DocId, _Name, _Fun, _Acc, _Opts) ->
    {error, {bad_arg, fold_fun}}.

fold_stream(Stream, Fun, Acc) ->
    case read_attachment(Stream) of
        {ok, Chunk} ->
            case Fun(Chunk, Acc) of
                {ok, Acc1} -> fold_stream(Stream, Fun, Acc1);
                {stop, Acc1} -> {ok, Acc1};
                stop -> {ok, Acc};
                Other -> erlang:error({bad_fold_return, Other})
            end;
        eof ->
            {ok, Acc};
        Error ->
            Error
    end.

%% ---------------------------------------------------------------------------
%% Changes
%% ---------------------------------------------------------------------------

%% @doc The changes after sequence `Since' (`0' for all, `now' for none):
%% `{ok, Changes, LastSeq}', in sequence order. A document appears once, at
%% its latest change. Pass `LastSeq' as the next `Since' to read what came
%% after. Options as for {@link fold_changes/5}.
%% ```
%% {ok, [#{<<"id">> := DocId, <<"seq">> := 1, <<"changes">> := [Rev]}], 1} =
%%     barrel:changes(Barrel, 0, #{}).
%% '''
-spec changes(barrel(), seq() | now, changes_opts()) ->
          {ok, [change()], seq()} | {error, reason()}.
changes(Barrel, Since, Opts) ->
    case fold_changes(Barrel, Since, fun(C, Acc) -> {ok, [C | Acc]} end, [], Opts) of
        {ok, Changes, Last} -> {ok, lists:reverse(Changes), Last};
        Error -> Error
    end.

%% @doc Folds over the changes feed after sequence `Since', over one snapshot:
%% `Fun(Change, Acc)' returns `{ok, Acc1}', `{stop, Acc1}' or `stop'. Returns
%% `{ok, Acc, LastSeq}' where `LastSeq' is where to continue from: the
%% barrel's latest sequence when the whole feed was read, else the sequence of
%% the last change handled (with `descending', always the latest sequence).
%%
%% Options: `include_docs' (default `false'; adds `<<"doc">>', the winning
%% revision, `<<"_deleted">> => true' for deletions), `style' (`main_only',
%% default, or `all_docs': `<<"changes">>' lists every leaf revision, winner
%% first, i.e. conflicts and deleted branches too), `limit', `descending'
%% (newest first), `filter' (path patterns, as for listeners: only documents
%% whose current revision matches one), `null'.
%% ```
%% {ok, Ids, _Last} = barrel:fold_changes(Barrel, 0,
%%     fun(#{<<"id">> := Id}, Acc) -> {ok, [Id | Acc]} end, [],
%%     #{filter => [<<"/type/user">>]}).
%% '''
-spec fold_changes(barrel(), seq() | now, fun((change(), term()) -> term()), term(),
                   changes_opts()) -> {ok, term(), seq()} | {error, reason()}.
fold_changes(Barrel, Since, Fun, Acc, Opts) when is_function(Fun, 2), is_map(Opts) ->
    Defaults = #{include_docs => false, style => main_only, limit => infinity,
                 descending => false, filter => [], null => null},
    case {since(Since), check_options(Opts, Defaults, fun changes_option_ok/2)} of
        {error, _} ->
            {error, {bad_arg, since}};
        {_, {error, _} = Error} ->
            Error;
        {S, {ok, #{include_docs := Docs, style := Style, limit := Limit,
                   descending := Desc, filter := Filter, null := Null}}} ->
            Flags = {Docs, Style =:= all_docs, Desc},
            case ?NIF(barrel_nif:changes_open(Barrel, S, Flags, patterns(Filter)), barrel) of
                {ok, Cursor, UpdateSeq} ->
                    From = case Since of now -> UpdateSeq; _ -> Since end,
                    try fold_feed(Cursor, Fun, Acc, Limit, Null, Desc, From, max(UpdateSeq, From))
                    after barrel_nif:changes_close(Cursor)
                    end;
                Error ->
                    Error
            end
    end;
fold_changes(_Barrel, _Since, Fun, _Acc, Opts) when is_function(Fun, 2) ->
    {error, {bad_option, Opts}};
fold_changes(_Barrel, _Since, _Fun, _Acc, _Opts) ->
    {error, {bad_arg, fold_fun}}.

since(now) -> ?SEQ_MAX;
since(N) when is_integer(N), N >= 0, N < ?SEQ_MAX -> N;
since(_) -> error.

patterns(P) when is_binary(P) -> [P];
patterns(Ps) -> Ps.

changes_option_ok(include_docs, V) -> is_boolean(V);
changes_option_ok(style, V) -> V =:= main_only orelse V =:= all_docs;
changes_option_ok(limit, V) -> V =:= infinity orelse (is_integer(V) andalso V >= 0);
changes_option_ok(descending, V) -> is_boolean(V);
changes_option_ok(filter, V) -> is_binary(V) orelse is_pattern_list(V);
changes_option_ok(null, V) -> is_atom(V).

%% @private
is_pattern_list(V) ->
    is_proper_list(V) andalso lists:all(fun is_binary/1, V).

fold_feed(_Cursor, _Fun, Acc, 0, _Null, Desc, Last, Done) ->
    {ok, Acc, last_seq(Desc, Last, Done)};
fold_feed(Cursor, Fun, Acc, Limit, Null, Desc, Last, Done) ->
    N = case Limit of infinity -> ?CHANGES_CHUNK; _ -> min(Limit, ?CHANGES_CHUNK) end,
    case barrel_nif:changes_next(Cursor, N, Null) of
        {ok, Changes, Exhausted} ->
            case apply_changes(Fun, Changes, Acc, Last) of
                {stop, Acc1, Seq} ->
                    {ok, Acc1, last_seq(Desc, Seq, Done)};
                {ok, Acc1, _Seq} when Exhausted ->
                    {ok, Acc1, Done};
                {ok, Acc1, Seq} ->
                    Left = case Limit of infinity -> infinity; _ -> Limit - length(Changes) end,
                    case Left of
                        0 -> {ok, Acc1, last_seq(Desc, Seq, Done)};
                        _ -> fold_feed(Cursor, Fun, Acc1, Left, Null, Desc, Seq, Done)
                    end
            end;
        Error ->
            Error
    end.

last_seq(true, _Seq, Done) -> Done;
last_seq(false, Seq, _Done) -> Seq.

apply_changes(_Fun, [], Acc, Last) ->
    {ok, Acc, Last};
apply_changes(Fun, [#{<<"seq">> := Seq} = C | Cs], Acc, _Last) ->
    case Fun(C, Acc) of
        {ok, Acc1} -> apply_changes(Fun, Cs, Acc1, Seq);
        {stop, Acc1} -> {stop, Acc1, Seq};
        stop -> {stop, Acc, Seq};
        Other -> erlang:error({bad_fold_return, Other})
    end.

%% @doc Starts a listener: a supervised process that hears the barrel's changes
%% matching `subscribe_to' (as in the talk). Returns `{ok, Pid}'; `Pid' is
%% also the `ListenerRef' in its messages. The listener stops with its owner
%% (the calling process) and with {@link stop_listener/1}.
%%
%% Options:
%% <ul>
%% <li>`subscribe_to' (default `[<<"/*">>]'): MQTT-like patterns over document
%%     paths. `/*' (or `#') is every document; `/id/DocId' one document;
%%     `/locations/+/country/france': `+' is exactly one segment (key, array
%%     position or value), `#' (last) any remaining segments. Values match as
%%     in the path index (strings case-insensitively, `1' equals `1.0'). A
%%     change is heard when the new or the previous revision matches, so a
%%     listener also hears a document leave its pattern, and its deletion.</li>
%% <li>`callback_fun': `fun(Change) -> _', called in the listener process; a
%%     crash is logged and the listener goes on. Or `to' (default: the
%%     caller): a pid that receives `{barrel_change, ListenerPid, Change}'.</li>
%% <li>`since' (default `now'): replay the feed's matching changes after
%%     this sequence first, then continue live, with nothing lost or repeated
%%     at the switch. While replaying (and while catching up, below), a change
%%     is matched against the document's current revision.</li>
%% <li>`include_docs', `style', `null': as for {@link fold_changes/5}.</li>
%% <li>`max_queue' (default 1000): with `to', when that process has more
%%     messages queued, the listener stops sending and later catches up from
%%     the feed. `window' (default 1000): most changes the engine hands the
%%     listener before it is told it fell behind and catches up from the feed.
%%     Memory stays bounded however slow the receiver.</li>
%% </ul>
%% ```
%% Self = self(),
%% {ok, L} = barrel:start_listener(Barrel, #{subscribe_to => [<<"/type/user">>], since => 0}),
%% receive {barrel_change, L, #{<<"id">> := Id}} -> Id end,
%% {ok, L2} = barrel:start_listener(Barrel, #{callback_fun => fun(C) -> Self ! C end}),
%% ok = barrel:stop_listener(L).
%% '''
-spec start_listener(barrel() | barrel_name(), listener_opts()) ->
          {ok, pid()} | {error, reason()}.
start_listener(Barrel, Opts) ->
    barrel_listener:start(Barrel, Opts).

%% @doc Stops a listener started by {@link start_listener/2}.
-spec stop_listener(pid()) -> ok | {error, not_found}.
stop_listener(Pid) ->
    barrel_listener:stop(Pid).

%% ---------------------------------------------------------------------------
%% Replication and peer-to-peer reads and writes
%% ---------------------------------------------------------------------------

%% @equiv replicate(Spec, #{})
-spec replicate(map()) -> {ok, binary()} | {error, reason()}.
replicate(Spec) ->
    replicate(Spec, #{}).

%% @doc Starts replicating `<<"source">>' to `<<"target">>' (as in the talk):
%% `{ok, RepId}'. Each side is a local barrel name, a remote barrel over
%% Barrel's WebSocket stream (`<<"ws://HOST:PORT/Name">>', `wss://'), or a
%% database over the CouchDB replication protocol (`<<"http://HOST:PORT/barrels/Name">>',
%% `https://', or any CouchDB / PouchDB-server database URL). Every revision is
%% copied with its history, conflicts and deletions included, in batches, with
%% a checkpoint on both sides after each batch (a continuous replication that
%% keeps finding changes: at most once a second), so a stopped replication
%% resumes where it was. See README, "Replication".
%%
%% Options: `continuous' (default `false': stop once caught up; `true': keep
%% following the source, retrying with backoff when a side is unreachable),
%% `sync' (push and pull at once), `filter' (path patterns, as for listeners),
%% `since' (a source sequence to start from instead of the checkpoint),
%% `batch_size' (default 500), `to' (a pid receiving
%% `{barrel_replication, RepId, Progress}'), `persist' (restart with the
%% node), `create_target' (default `true'), `auth' (`{basic, User, Pass}' or
%% `{bearer, Token}' for remote sides), `tls_ca' (a PEM file: the certificate
%% authority to trust for `https://' and `wss://' sides instead of the public
%% roots).
%% ```
%% {ok, RepId} = barrel:replicate(#{<<"source">> => <<"mybarrel">>,
%%                                  <<"target">> => <<"ws://127.0.0.1:7080/Remote">>}),
%% {ok, #{state := completed, docs_written := N}} = barrel:replication_info(RepId).
%% '''
-spec replicate(map(), map()) -> {ok, binary()} | {error, reason()}.
replicate(Spec, Opts) ->
    barrel_replicator:start(Spec, Opts).

%% @doc The state (`running', `idle' (continuous, caught up), `retrying',
%% `completed', `failed', `cancelled') and counters of a replication:
%% `{ok, #{state, docs_read, docs_written, attachments_copied, attachment_bytes, last_seq, errors,
%% last_error, legs, ...}}'
%% (`last_seq': the source sequence of the last checkpoint).
-spec replication_info(binary()) -> {ok, map()} | {error, not_found}.
replication_info(RepId) ->
    barrel_replicator:info(RepId).

%% @doc Stops a replication (and forgets it, if it was persistent).
-spec cancel_replication(binary()) -> ok | {error, not_found}.
cancel_replication(RepId) ->
    barrel_replicator:cancel(RepId).

%% A hop: #{host => "HOST:PORT" | <<"HOST:PORT">>, name => Name} with an
%% optional nested hop under the same key (a chain).
p2p_hops(#{host := Host, name := Name} = Hop, Key) when is_binary(Name) ->
    H = case Host of
            _ when is_binary(Host) -> Host;
            _ when is_list(Host) -> unicode:characters_to_binary(Host);
            _ -> error
        end,
    Url = case H of
              error -> error;
              <<"http://", _/binary>> -> <<H/binary, "/barrels/", Name/binary>>;
              <<"https://", _/binary>> -> <<H/binary, "/barrels/", Name/binary>>;
              _ -> <<"http://", H/binary, "/barrels/", Name/binary>>
          end,
    case {Url, maps:get(Key, Hop, undefined)} of
        {error, _} -> {error, {bad_option, {Key, Hop}}};
        {_, undefined} -> {ok, [{Host, Url}]};
        {_, Next} ->
            case p2p_hops(Next, Key) of
                {ok, More} -> {ok, [{Host, Url} | More]};
                Error -> Error
            end
    end;
p2p_hops(Hop, Key) ->
    {error, {bad_option, {Key, Hop}}}.

%% The local write is done: push the document to every hop, each directly from here.
p2p_write(Barrel, Id, Rev, Hops) ->
    Results = ?NIF(barrel_nif:p2p_push(Barrel, Id, [U || {_, U} <- Hops], undefined), barrel),
    case Results of
        {error, _} = Error ->
            {error, {p2p_write_failed, Id, Rev, [{H, Error} || {H, _} <- Hops]}};
        _ ->
            case [{H, R} || {{H, _}, R} <- lists:zip(Hops, Results), R =/= ok] of
                [] -> {ok, Id, Rev};
                Failed -> {error, {p2p_write_failed, Id, Rev, Failed}}
            end
    end.

%% Not found here: ask each hop in turn; a dead hop is skipped.
p2p_read(_Barrel, _DocId, [], _Cache, _Null) ->
    {error, not_found};
p2p_read(Barrel, DocId, [{_, Url} | Hops], Cache, Null) ->
    case barrel_nif:p2p_fetch(Url, DocId, undefined, Null) of
        {ok, Doc} ->
            Cache andalso save_doc(Barrel, Doc, #{new_edits => false}),
            {ok, maps:remove(<<"_revisions">>, Doc)};
        {error, _} ->
            p2p_read(Barrel, DocId, Hops, Cache, Null)
    end.

%% ---------------------------------------------------------------------------
%% HTTP
%% ---------------------------------------------------------------------------

%% @doc Starts the HTTP and WebSocket API over this node's barrels (routes in
%% the README, "HTTP routes"): `{ok, Pid}', a supervised process that stops
%% with {@link stop_http/1} or the application. Options: `ip' (default
%% `{127,0,0,1}'; any other address requires `basic_auth' or `tokens'),
%% `port' (default 7080; 0 picks a free one, see {@link http_info/1}),
%% `basic_auth' (`[{User, Password}]' binaries), `tokens' (bearer tokens),
%% `tls' (`{CertFile, KeyFile}' PEM files: https and wss), `cors' (`none',
%% `any' or a list of origins), `max_body' (bytes, default 64 MiB; JSON
%% bodies), `max_attachment_size' (bytes, default 16 GiB: attachment uploads,
%% which are streamed and not bound by `max_body'; larger ones get 413).
%% ```
%% {ok, Http} = barrel:start_http(#{ip => {127,0,0,1}, port => 7080}),
%% {ok, #{url := <<"http://127.0.0.1:7080">>}} = barrel:http_info(Http),
%% ok = barrel:stop_http(Http).
%% '''
-spec start_http(map()) -> {ok, pid()} | {error, reason()}.
start_http(Opts) ->
    barrel_http:start(Opts).

%% @doc Stops a server started by {@link start_http/1}.
-spec stop_http(pid()) -> ok | {error, not_found}.
stop_http(Pid) ->
    barrel_http:stop(Pid).

%% @doc Where a server listens: `{ok, #{ip, port, url}}'.
-spec http_info(pid()) -> {ok, map()} | {error, not_found}.
http_info(Pid) ->
    barrel_http:info(Pid).

%% ---------------------------------------------------------------------------
%% Queries
%% ---------------------------------------------------------------------------

%% @doc Folds over the documents whose value at `Path' matches, in index order:
%% by path (with a `*', array position first), then by value (null, false,
%% true, numbers, then strings; strings compared lowercased, ids included),
%% then by document id. Every document is indexed automatically
%% by every path to every scalar (see README, "Path index").
%%
%% Selection options (at most one kind): `equal => V'; `prefix => Bin' (string
%% values starting with it); `start_at => V' and/or `end_at => V', inclusive
%% unless `start_inclusive => false' / `end_inclusive => false'. With none,
%% every document with a scalar at `Path' matches. Other options: `limit',
%% `descending' (default `false'), `include_docs' (default `true'; with
%% `false' each row is `#{<<"id">> => Id, <<"value">> => IndexedValue}'),
%% `null'. With a `*' in the path a document matches once, at its first
%% matching entry. The whole query reads one snapshot, whatever writers do
%% meanwhile. The index is written just after each commit by its own thread:
%% a query first waits until every write committed before it is indexed, so
%% it always sees the caller's own writes.
%% ```
%% {ok, Ids} = barrel:query(Barrel, <<"$/locations/*/country">>,
%%                          fun(#{<<"id">> := Id}, Acc) -> {ok, [Id | Acc]} end, [],
%%                          #{equal => <<"France">>}).
%% '''
-spec query(barrel(), path(), fold_fun(), term(), query_opts()) ->
          {ok, term()} | {error, reason()}.
query(Barrel, Path, Fun, Acc, Opts) when is_function(Fun, 2), is_map(Opts) ->
    case query_select(Opts) of
        {ok, Select, #{limit := Limit, descending := Desc, include_docs := Docs,
                       null := Null}} ->
            run_query(Barrel, Path, Select, Desc, Docs, Null, Fun, Acc, Limit);
        Error ->
            Error
    end;
query(_Barrel, _Path, Fun, _Acc, Opts) when is_function(Fun, 2) ->
    {error, {bad_option, Opts}};
query(_Barrel, _Path, _Fun, _Acc, _Opts) ->
    {error, {bad_arg, fold_fun}}.

%% @equiv find(Barrel, Query, #{})
-spec find(barrel(), binary() | {path(), query_opts()}) -> {ok, [doc()]} | {error, reason()}.
find(Barrel, Query) ->
    find(Barrel, Query, #{}).

%% @doc The matching documents as a list. `Query' is the talk's one-string
%% form, `<<"$/path/to/value">>', where the last segment is the value (`null',
%% `true', `false', a number, or else a string), or `{Path, QueryOpts}' as for
%% {@link query/5}. `Opts' adds `limit', `descending', `include_docs', `null'.
%% ```
%% {ok, [#{<<"id">> := <<"acme">>}]} = barrel:find(Barrel, <<"$/headquarter/france">>).
%% '''
-spec find(barrel(), binary() | {path(), query_opts()}, query_opts()) ->
          {ok, [doc()]} | {error, reason()}.
find(Barrel, Query, Opts) when is_binary(Query), is_map(Opts) ->
    case query_select(Opts) of
        {ok, all, #{limit := Limit, descending := Desc, include_docs := Docs, null := Null}} ->
            collect(run_query(Barrel, Query, path_value, Desc, Docs, Null,
                              fun collect_row/2, [], Limit));
        {ok, _, _} ->
            {error, {bad_query, <<"the value is in the path: no selection options">>}};
        Error ->
            Error
    end;
find(Barrel, {Path, QueryOpts}, Opts) when is_map(QueryOpts), is_map(Opts) ->
    collect(query(Barrel, Path, fun collect_row/2, [], maps:merge(QueryOpts, Opts)));
find(_Barrel, Query, Opts) when is_map(Opts) ->
    {error, {bad_query, Query}};
find(_Barrel, _Query, Opts) ->
    {error, {bad_option, Opts}}.

collect_row(Row, Acc) -> {ok, [Row | Acc]}.

collect({ok, Rows}) -> {ok, lists:reverse(Rows)};
collect(Error) -> Error.

%% @doc Rebuilds the path index of a barrel from its documents and returns the
%% number of documents indexed. The index is maintained on every write; this is
%% for recovery. Queries running meanwhile may see a partial index.
-spec reindex(barrel()) -> {ok, non_neg_integer()} | {error, reason()}.
reindex(Barrel) ->
    ?NIF(barrel_nif:reindex(Barrel), barrel).

query_select(Opts) ->
    Defaults = #{equal => undefined, prefix => undefined, start_at => undefined,
                 end_at => undefined, start_inclusive => true, end_inclusive => true,
                 limit => infinity, descending => false, include_docs => true, null => null},
    case check_options(Opts, Defaults, fun query_option_ok/2) of
        {ok, #{equal := E, prefix := P, start_at := S, end_at := End} = O} ->
            Bound = fun(undefined, _) -> undefined;
                       (V, true) -> {inclusive, V};
                       (V, false) -> {exclusive, V}
                    end,
            Ranged = S =/= undefined orelse End =/= undefined,
            case {E, P, Ranged} of
                {undefined, undefined, false} -> {ok, all, O};
                {_, undefined, false} -> {ok, {equal, E}, O};
                {undefined, _, false} -> {ok, {prefix, P}, O};
                {undefined, undefined, true} ->
                    {ok, {range, Bound(S, maps:get(start_inclusive, O)),
                          Bound(End, maps:get(end_inclusive, O))}, O};
                _ ->
                    {error, {bad_query,
                             <<"equal, prefix and start_at/end_at exclude each other">>}}
            end;
        Error ->
            Error
    end.

query_option_ok(K, V) when K =:= equal; K =:= start_at; K =:= end_at -> is_scalar(V);
query_option_ok(prefix, V) -> is_binary(V);
query_option_ok(K, V) when K =:= start_inclusive; K =:= end_inclusive; K =:= descending;
                           K =:= include_docs -> is_boolean(V);
query_option_ok(limit, V) -> V =:= infinity orelse (is_integer(V) andalso V >= 0);
query_option_ok(null, V) -> is_atom(V).

is_scalar(V) ->
    is_binary(V) orelse is_number(V) orelse is_boolean(V) orelse V =:= null orelse V =:= nil.

run_query(_Barrel, _Path, _Select, _Desc, _Docs, _Null, _Fun, Acc, 0) ->
    {ok, Acc};
run_query(Barrel, Path, Select, Desc, Docs, Null, Fun, Acc, Limit) ->
    case ?NIF(barrel_nif:query_open(Barrel, Path, Select, Desc, Docs), barrel) of
        {ok, Cursor} ->
            %% Release the snapshot now, not when the cursor is garbage collected: it holds
            %% the store open (application stop waits for it).
            try query_chunks(Cursor, Null, Fun, Acc, Limit)
            after barrel_nif:query_close(Cursor)
            end;
        Error -> Error
    end.

query_chunks(Cursor, Null, Fun, Acc, Limit) ->
    N = case Limit of infinity -> ?FOLD_CHUNK; _ -> min(Limit, ?FOLD_CHUNK) end,
    case barrel_nif:query_next(Cursor, N, Null) of
        {ok, Rows, Done} ->
            case apply_fold(Fun, Rows, Acc) of
                {stop, Acc1} -> {ok, Acc1};
                {ok, Acc1} when Done -> {ok, Acc1};
                {ok, Acc1} when Limit =:= N -> {ok, Acc1};
                {ok, Acc1} ->
                    Left = case Limit of infinity -> infinity; _ -> Limit - N end,
                    query_chunks(Cursor, Null, Fun, Acc1, Left)
            end;
        Error ->
            Error
    end.

%% @private Merges Opts over Defaults, refusing unknown keys and ill-typed values.
check_options(Opts, Defaults, Ok) ->
    maps:fold(fun(K, V, {ok, Acc}) ->
                      case maps:is_key(K, Defaults) andalso Ok(K, V) of
                          true -> {ok, Acc#{K => V}};
                          false -> {error, {bad_option, {K, V}}}
                      end;
                 (_, _, Error) ->
                      Error
              end, {ok, Defaults}, Opts).
