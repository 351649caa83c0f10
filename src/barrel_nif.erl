%% @private
%% @doc NIF stubs. The functions are replaced by the Rust implementations in
%% `priv/barrel_nif.so' when the module loads; `barrel' is the documented API.
-module(barrel_nif).

-export([store_open/2, store_close/0, store_compact/0, store_info/0,
         create_barrel/2, open_barrel/1, close_barrel/1, delete_barrel/1, list_barrels/0,
         barrel_info/1,
         save_doc/3, save_docs/3, delete_doc/3,
         save_doc_async/4, save_docs_async/4, delete_doc_async/4, fetch_doc/6, fetch_doc_cached/6,
         fetch_open_revs/5, doc_encoding_check/1,
         fold_docs_chunk/6,
         query_open/5, query_next/3, query_close/1, reindex/1,
         changes_open/4, changes_next/3, changes_close/1,
         subscribe/6, subscription_ack/2, subscription_resume/1, subscription_cancel/1,
         http_start/8, http_stop/1,
         replication_start/5, replication_progress/1, replication_cancel/1,
         p2p_push/4, p2p_fetch/4,
         att_writer_open/8, att_writer_write/2, att_writer_finish/2, att_writer_cancel/1,
         att_reader_open/5, att_reader_read/1, att_info/4, att_fetch/4, att_delete/4,
         fetch_doc_attachments/6]).

-on_load(init/0).

-define(NOT_LOADED, erlang:nif_error({not_loaded, ?MODULE})).

init() ->
    erlang:load_nif(filename:join(priv_dir(), "barrel_nif"), 0).

priv_dir() ->
    case code:priv_dir(barrel) of
        {error, bad_name} ->
            %% Loaded outside an application layout: priv/ next to ebin/.
            Ebin = filename:dirname(code:which(?MODULE)),
            filename:join(filename:dirname(Ebin), "priv");
        Dir ->
            Dir
    end.

store_open(_Dir, _Opts) -> ?NOT_LOADED.
store_close() -> ?NOT_LOADED.
store_compact() -> ?NOT_LOADED.
store_info() -> ?NOT_LOADED.
create_barrel(_Name, _Params) -> ?NOT_LOADED.
open_barrel(_Name) -> ?NOT_LOADED.
close_barrel(_Barrel) -> ?NOT_LOADED.
delete_barrel(_Name) -> ?NOT_LOADED.
list_barrels() -> ?NOT_LOADED.
barrel_info(_NameOrBarrel) -> ?NOT_LOADED.
save_doc(_Barrel, _Doc, _NewEdits) -> ?NOT_LOADED.
save_docs(_Barrel, _Docs, _NewEdits) -> ?NOT_LOADED.
delete_doc(_Barrel, _DocId, _Rev) -> ?NOT_LOADED.
save_doc_async(_Barrel, _Doc, _NewEdits, _Ref) -> ?NOT_LOADED.
save_docs_async(_Barrel, _Docs, _NewEdits, _Ref) -> ?NOT_LOADED.
delete_doc_async(_Barrel, _DocId, _Rev, _Ref) -> ?NOT_LOADED.
fetch_doc(_Barrel, _DocId, _Rev, _Revs, _Conflicts, _Null) -> ?NOT_LOADED.
fetch_doc_cached(_Barrel, _DocId, _Rev, _Revs, _Conflicts, _Null) -> ?NOT_LOADED.
fetch_open_revs(_Barrel, _DocId, _Which, _Revs, _Null) -> ?NOT_LOADED.
fold_docs_chunk(_Barrel, _Start, _End, _Limit, _IncludeDocs, _Null) -> ?NOT_LOADED.
query_open(_Barrel, _Path, _Select, _Descending, _IncludeDocs) -> ?NOT_LOADED.
query_next(_Cursor, _N, _Null) -> ?NOT_LOADED.
query_close(_Cursor) -> ?NOT_LOADED.
reindex(_Barrel) -> ?NOT_LOADED.
changes_open(_Barrel, _Since, _Flags, _Filter) -> ?NOT_LOADED.
changes_next(_Cursor, _N, _Null) -> ?NOT_LOADED.
changes_close(_Cursor) -> ?NOT_LOADED.
subscribe(_Barrel, _Patterns, _Flags, _Window, _Target, _Null) -> ?NOT_LOADED.
subscription_ack(_Sub, _N) -> ?NOT_LOADED.
subscription_resume(_Sub) -> ?NOT_LOADED.
subscription_cancel(_Sub) -> ?NOT_LOADED.
http_start(_Ip, _Port, _Basic, _Tokens, _Tls, _Cors, _MaxBody, _MaxAttachment) -> ?NOT_LOADED.
http_stop(_Server) -> ?NOT_LOADED.
replication_start(_Source, _Target, _Opts, _Pid, _Tag) -> ?NOT_LOADED.
replication_progress(_Rep) -> ?NOT_LOADED.
replication_cancel(_Rep) -> ?NOT_LOADED.
p2p_push(_Barrel, _DocId, _Urls, _Auth) -> ?NOT_LOADED.
p2p_fetch(_Url, _DocId, _Auth, _Null) -> ?NOT_LOADED.
att_writer_open(_Barrel, _DocId, _Rev, _Name, _ContentType, _Digest, _Length, _Limit) ->
    ?NOT_LOADED.
att_writer_write(_Writer, _Data) -> ?NOT_LOADED.
att_writer_finish(_Writer, _Last) -> ?NOT_LOADED.
att_writer_cancel(_Writer) -> ?NOT_LOADED.
att_reader_open(_Barrel, _DocId, _Name, _Rev, _Range) -> ?NOT_LOADED.
att_reader_read(_Reader) -> ?NOT_LOADED.
att_info(_Barrel, _DocId, _Name, _Rev) -> ?NOT_LOADED.
att_fetch(_Barrel, _DocId, _Name, _Rev) -> ?NOT_LOADED.
att_delete(_Barrel, _DocId, _Rev, _Name) -> ?NOT_LOADED.
fetch_doc_attachments(_Barrel, _DocId, _Rev, _Revs, _Conflicts, _Null) -> ?NOT_LOADED.
%% For the test suite: `same' when a document term converts to the same document through the
%% direct path (straight to JSON) and the general one (through JSON values), `elsewhere' when
%% the direct path does not take it, `{different, Direct, General}' otherwise.
doc_encoding_check(_Doc) -> ?NOT_LOADED.
