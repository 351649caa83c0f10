defmodule Barrel do
  @moduledoc """
  Barrel is an embeddable document database: JSON documents with
  CouchDB-style revisions, stored with RocksDB inside your BEAM node.

  This module is the Elixir face of the Erlang API `:barrel`. It takes
  keyword lists where `:barrel` takes option maps, returns JSON `null` as
  `nil`, and otherwise returns exactly what `:barrel` returns: `:ok`,
  `{:ok, ...}` or `{:error, reason}`. Bad arguments and options are
  returned as errors, never raised.

  ## Quick start

  Add `{:barrel, path: "path/to/barrel"}` to your dependencies (the NIF is
  built with cargo when the project compiles). The `:barrel` application
  opens the node's store when it starts; a barrel is a named collection of
  documents, and you work with it through a handle from `open/1`:

      iex> {:ok, _started} = Application.ensure_all_started(:barrel)
      iex> Barrel.create_barrel("quickstart")
      :ok
      iex> {:ok, barrel} = Barrel.open("quickstart")
      iex> {:ok, "apple", rev1} = Barrel.save_doc(barrel, %{"id" => "apple", "color" => "red"})
      iex> Barrel.fetch_doc(barrel, "apple")
      {:ok, %{"id" => "apple", "_rev" => rev1, "color" => "red"}}

  To update a document, send back the revision you read in `"_rev"`. A save
  based on a revision that is no longer current is refused with
  `{:error, :conflict}`, so two writers cannot silently overwrite each other
  (each example here stands alone, so it makes a barrel of its own):

      iex> :ok = Barrel.create_barrel("quickstart-revs")
      iex> {:ok, barrel} = Barrel.open("quickstart-revs")
      iex> {:ok, "pear", rev1} = Barrel.save_doc(barrel, %{"id" => "pear", "ripe" => false})
      iex> {:ok, "pear", rev2} = Barrel.save_doc(barrel, %{"id" => "pear", "_rev" => rev1, "ripe" => true})
      iex> Barrel.save_doc(barrel, %{"id" => "pear", "_rev" => rev1, "ripe" => false})
      {:error, :conflict}
      iex> Barrel.save_doc(barrel, %{"id" => "pear", "ripe" => false})
      {:error, :conflict}
      iex> {:ok, "pear", _tombstone} = Barrel.delete_doc(barrel, "pear", rev2)
      iex> Barrel.fetch_doc(barrel, "pear")
      {:error, :not_found}

  `fold_docs/4` walks the live documents in id order:

      iex> :ok = Barrel.create_barrel("quickstart-fold")
      iex> {:ok, barrel} = Barrel.open("quickstart-fold")
      iex> {:ok, [{:ok, "fig", _}, {:ok, "kiwi", _}]} =
      ...>   Barrel.save_docs(barrel, [%{"id" => "fig", "price" => 3}, %{"id" => "kiwi", "price" => 2}])
      iex> Barrel.fold_docs(barrel, fn doc, total -> {:ok, total + Map.get(doc, "price", 0)} end, 0)
      {:ok, 5}
      iex> Barrel.close(barrel)
      :ok

  ## Documents

  A document is a map with string keys: a JSON object. Values map to JSON
  like this:

  | Elixir                          | JSON                 |
  | ------------------------------- | -------------------- |
  | UTF-8 binary (`"text"`)         | string               |
  | integer (64-bit)                | number               |
  | float                           | number               |
  | `true`, `false`                 | `true`, `false`      |
  | `nil` (or `:null`)              | `null`               |
  | list                            | array                |
  | map with string keys            | object               |

  Anything else (atom keys, tuples, pids, other atoms, binaries that are not
  UTF-8, integers that do not fit in 64 bits) is refused with
  `{:error, {:bad_doc, {:invalid_key | :invalid_value, path}}}`, where
  `path` is a JSON pointer to the offending place, such as `"/tags/0"`.
  `null` comes back as `nil` unless you pass another atom as the `:null`
  option.

  Keys starting with `_` are reserved. The ones Barrel knows:

    * `"id"`: the document id, 1 to 1024 bytes of UTF-8 not starting with
      `_`; generated when absent.
    * `"_rev"`: the revision, `"Generation-Hash"` such as
      `"1-967a00dff5e02add41819138abb3284d"`. The same edit of the same
      revision gives the same hash on every node.
    * `"_deleted"`: `true` on a tombstone, the revision `delete_doc/3` writes.
    * `"_revisions"`, `"_conflicts"`: returned by `fetch_doc/3` when asked;
      `"_revisions"` is also read by `save_doc/3` with `new_edits: false`.
    * `"_attachments"`: the document's attachments (see "Attachments").

  ## Revisions and conflicts

  Every document keeps a tree of revisions. Locally, `save_doc/3` only
  extends the current revision, so the tree stays a single branch. Writes
  with `new_edits: false` (what replication does) store revisions made
  elsewhere as they are, which can create *conflicts*: several live leaf
  revisions. Every node picks the same winner (not deleted over deleted,
  then highest generation, then highest hash), `fetch_doc/3` returns it,
  and `conflicts: true` or `open_revs: :all` show the others so that you can
  merge them and delete the losers.

  ## Attachments

  Binary contents go with a document revision, under `"_attachments"`, one
  map per name. Written inline, `"data"` holds the raw bytes (a binary, not
  base64); a fetched document lists each attachment as a stub with its
  `"content_type"`, `"digest"`, `"length"` and `"revpos"`, and saving the
  fetched document back keeps them. `put_attachment/6` writes one
  attachment, streamed from an enumerable, a function or a file, and
  `fetch_attachment/4`, `attachment_chunks/4` and `fold_attachment/6` read
  it back, whole or chunk by chunk. Identical contents are stored once per
  barrel, and a content is deleted when no revision refers to it any more.
  An attachment with `"url"` instead of data is a link to content kept
  elsewhere.

      iex> :ok = Barrel.create_barrel("quickstart-attachments")
      iex> {:ok, barrel} = Barrel.open("quickstart-attachments")
      iex> atts = %{"note.txt" => %{"content_type" => "text/plain", "data" => "hello"}}
      iex> {:ok, "a", rev1} = Barrel.save_doc(barrel, %{"id" => "a", "_attachments" => atts})
      iex> {:ok, %{"_attachments" => %{"note.txt" => stub}}} = Barrel.fetch_doc(barrel, "a")
      iex> stub
      %{"content_type" => "text/plain", "digest" => "md5-XUFAKrxLKna5cZ2REBfFkg==", "length" => 5, "revpos" => 1, "stub" => true}
      iex> chunks = Stream.repeatedly(fn -> :binary.copy("x", 65_536) end) |> Stream.take(4)
      iex> {:ok, "a", _rev2} = Barrel.put_attachment(barrel, "a", rev1, "big.bin", {:stream, chunks})
      iex> Barrel.attachment_chunks(barrel, "a", "big.bin") |> Enum.map(&byte_size/1)
      [131072, 131072]

  ## Path index and queries

  Every document is indexed as it is written, in the same atomic write: each
  scalar value (string, number, boolean, `null`) at each path of its winning
  revision, plus its id at `$/id/ID`. The document
  `{"id":"ID","locations":[{"country":"France","city":"creil"}],"headquarter":"France"}`
  yields `$/id/ID`, `$/locations/0/country/france`,
  `$/locations/0/city/creil` and `$/headquarter/france`. An update replaces
  the entries of the old winner, a delete removes them, and of conflicting
  revisions only the winner is indexed.

    * A path is `"$/locations/0/country"` or a list of segments,
      `["locations", 0, "country"]`. Digits (integers in a list) are array
      indexes, `*` (`:*` in a list) is any array index, and in a binary `~1`
      and `~0` stand for `/` and `~` inside a key.
    * Strings are matched lowercased (Unicode lowercase): `"Été"` matches
      `"été"`. Documents keep their original values.
    * Values sort by type, `null < false < true < numbers < strings`, then
      numbers numerically (integers and floats together; `2.0` is the same
      value as `2`) and strings by their lowercased UTF-8 bytes.
    * A path with `*` lists its matches by array index first, then value,
      then id, and a document once, at its first matching entry.
    * Every query reads one snapshot: writes made while it runs, even by its
      own function, are not seen.
    * The index is written by its own thread just after each commit; a query
      first waits until every write committed before it is indexed, so it
      always sees the caller's own writes.
    * Strings longer than 256 bytes are stored but not indexed.

  `query/5` folds over the matches in index order, `find/3` returns them as
  a list, and `reindex/1` rebuilds the index from the documents:

      iex> :ok = Barrel.create_barrel("quickstart-query")
      iex> {:ok, barrel} = Barrel.open("quickstart-query")
      iex> {:ok, _results} =
      ...>   Barrel.save_docs(barrel, [
      ...>     %{"id" => "ID", "locations" => [%{"country" => "France", "city" => "creil"}], "headquarter" => "France"},
      ...>     %{"id" => "other", "locations" => [%{"country" => "Spain"}], "headquarter" => "Spain"}
      ...>   ])
      iex> {:ok, [%{"id" => "ID", "headquarter" => "France"}]} = Barrel.find(barrel, "$/headquarter/france")
      iex> Barrel.find(barrel, {"$/locations/*/country", equal: "FRANCE"}, include_docs: false)
      {:ok, [%{"id" => "ID", "value" => "france"}]}

  ## Changes

  Every document write takes the barrel's next sequence number, and the
  changes feed lists, in sequence order, each document once at its latest
  change. `changes/3` and `fold_changes/5` read the feed after a sequence,
  `changes_stream/2` reads it lazily in chunks, and a listener
  (`start_listener/2`, or `Barrel.Listener` in a supervision tree) replays
  it and then hears changes as they are committed:

      iex> :ok = Barrel.create_barrel("quickstart-changes")
      iex> {:ok, barrel} = Barrel.open("quickstart-changes")
      iex> {:ok, listener} = Barrel.start_listener(barrel, subscribe_to: ["/type/user"])
      iex> {:ok, "order-1", _} = Barrel.save_doc(barrel, %{"id" => "order-1", "type" => "order"})
      iex> {:ok, "ann", rev} = Barrel.save_doc(barrel, %{"id" => "ann", "type" => "user"})
      iex> receive do
      ...>   {:barrel_change, ^listener, change} -> change
      ...> end
      %{"id" => "ann", "rev" => rev, "seq" => 2, "changes" => [rev]}
      iex> Barrel.stop_listener(listener)
      :ok
      iex> {:ok, changes, 2} = Barrel.changes(barrel, 0)
      iex> Enum.map(changes, & &1["id"])
      ["order-1", "ann"]

  ## HTTP

  `start_http/1` serves the node's barrels over HTTP and WebSocket from
  inside the node: Barrel's own routes (`/barrels/NAME/docs/ID`, documents
  with `"id"`) and, at `/barrels/NAME`, a CouchDB-compatible surface
  (documents with `"_id"`, `_changes`, `_bulk_docs`, ...) that replication
  clients such as PouchDB sync with. The README lists the routes ("HTTP
  routes"). What is written over HTTP is read with `fetch_doc/3` and the
  changes feed at once, and the other way round.

  ## Replication

  `replicate/3` copies every revision of every document from a source to a
  target, conflicts and deletions included, with their history, so that both
  end with the same revision trees and pick the same winners. Each side is
  the name of a barrel of this node or the URL of a remote one (see
  `t:endpoint/0`): `"http://HOST:PORT/barrels/NAME"`, which speaks the
  CouchDB replication protocol and so also reaches CouchDB and PouchDB
  servers, or `"ws://HOST:PORT/NAME"`, Barrel's WebSocket stream.

  A replication runs in the background, under the `:barrel` application's
  supervisor, in batches. After each batch (a continuous replication that
  keeps finding changes: at most once a second) it writes a checkpoint on both
  sides, so the next replication between the same sides, with the same
  filter, starts where the last one stopped. A one-shot replication stops
  once the target has caught up; a `continuous: true` one then follows the
  source until `cancel_replication/1`. `replication_info/1` tells how far it
  is, and the `:to` process hears its progress:

      iex> :ok = Barrel.create_barrel("quickstart-replication")
      iex> {:ok, barrel} = Barrel.open("quickstart-replication")
      iex> {:ok, "a", rev} = Barrel.save_doc(barrel, %{"id" => "a"})
      iex> {:ok, rep} = Barrel.replicate("quickstart-replication", "quickstart-replica", to: self())
      iex> receive do
      ...>   {:barrel_replication, ^rep, %{state: :completed, docs_written: written}} -> written
      ...> after
      ...>   5000 -> :timeout
      ...> end
      1
      iex> {:ok, replica} = Barrel.open("quickstart-replica")
      iex> Barrel.fetch_doc(replica, "a")
      {:ok, %{"id" => "a", "_rev" => rev}}

  For one document at a time, `save_doc/3` with `:p2p_write` saves here and
  then pushes the document to other barrels over HTTP, and `fetch_doc/3`
  with `:p2p_read` asks them when the document is not here (`t:hop/0` says
  how to name them). Here the other barrels are on this node, reached
  through its own server:

      iex> {:ok, http} = Barrel.start_http(port: 0)
      iex> {:ok, %{url: url}} = Barrel.http_info(http)
      iex> :ok = Barrel.create_barrel("quickstart-p2p")
      iex> {:ok, barrel} = Barrel.open("quickstart-p2p")
      iex> peer = %{host: url, name: "quickstart-p2p-peer"}
      iex> {:ok, "a", rev} = Barrel.save_doc(barrel, %{"id" => "a"}, p2p_write: peer)
      iex> {:ok, peer_barrel} = Barrel.open("quickstart-p2p-peer")
      iex> Barrel.fetch_doc(peer_barrel, "a")
      {:ok, %{"id" => "a", "_rev" => rev}}
      iex> {:ok, "b", rev_b} = Barrel.save_doc(peer_barrel, %{"id" => "b"})
      iex> Barrel.fetch_doc(barrel, "b")
      {:error, :not_found}
      iex> Barrel.fetch_doc(barrel, "b", p2p_read: peer)
      {:ok, %{"id" => "b", "_rev" => rev_b}}
      iex> Barrel.stop_http(http)
      :ok

  ## Errors

  Every function returns `{:error, reason}` on failure; see `t:reason/0`.
  The usual ones are `:not_found`, `:already_exists`, `:conflict` and
  `:closed`; the others name the argument that was refused and why.

  ## Configuration

  The application environment of `:barrel` is read when the application
  starts:

    * `:data_dir`: where the store lives (default `"barrel_data"`, relative
      to the current directory). In `config/config.exs`:
      `config :barrel, data_dir: "/var/lib/my_app/barrel"`.
    * `:block_cache_bytes`: the size of RocksDB's block cache.
    * `:tune_malloc`: on glibc, raise `malloc`'s mmap threshold so RocksDB's
      memtable memory is reused instead of mapped again (default `true`;
      process-wide).
    * `:low_priority_compactions`: run RocksDB's compactions at the lowest CPU
      priority, so they use the CPU left over by callers, writes, indexing
      and flushes (default `true`; process-wide, and once lowered it stays
      lowered). `false` when other work keeps the cores busy for long:
      compactions would fall behind and writes slow down.

  Handles do not survive the application: after `Application.stop(:barrel)`
  every call on an old handle returns `{:error, :closed}`, and you open new
  handles once the application has started again.
  """

  @typedoc "An open barrel handle, from `open/1`."
  @type barrel :: reference()

  @typedoc """
  A barrel name: 1 to 128 bytes of ASCII letters, digits, `_`, `-` and `.`,
  starting with a letter or a digit.
  """
  @type name :: String.t()

  @typedoc "A document: a JSON object as a map with string keys."
  @type doc :: %{optional(String.t()) => term()}

  @typedoc "A document id: 1 to 1024 bytes of UTF-8, not starting with `_`."
  @type docid :: String.t()

  @typedoc ~S'A revision: `"Generation-Hash"`, such as `"1-967a00dff5e02add41819138abb3284d"`.'
  @type rev :: String.t()

  @typedoc """
  Why a call failed.

    * `:not_found`: no such barrel, or no such (live) document or revision.
    * `:already_exists`: `create_barrel/2` on a name in use.
    * `:conflict`: a save or delete that is not based on a current revision.
    * `:closed`: the handle was closed, or the application stopped.
    * `{:invalid_name, name}`, `{:bad_param, param}`: refused by
      `create_barrel/2` and the other functions taking a name.
    * `{:invalid_doc_id, id}`, `{:bad_rev, rev}`, `{:bad_doc, why}`: refused
      document input.
    * `{:bad_option, option}`: an unknown option, an ill-typed value, or
      options that are not a keyword list.
    * `{:bad_query, why}`: a query that cannot be run: a bad path, a value
      that cannot be indexed, selection options that exclude each other.
    * `{:bad_pattern, pattern}`: a path pattern of `:filter` or
      `:subscribe_to` that cannot be parsed.
    * `{:bad_arg, what}`: an argument of the wrong type, such as a handle that
      is not a barrel, or a `since` that is not a sequence.
    * `{:bad_endpoint, side}`: a side of `replicate/3` that is neither a
      barrel name nor a URL.
    * `{:bad_attachment, why}`: a malformed `"_attachments"` member or
      attachment name, or content that does not match the `digest` or
      `length` given with it. `{:missing_stub, name}`: a stub naming content
      this barrel does not have. `{:attachment_too_large, max_size}`: a
      content longer than `:max_size`. `{:file_error, reason}`: the file of
      `{:file, path}` could not be read.
    * `{:p2p_write_failed, docid, rev, [{host, {:error, reason}}]}`: the
      document was saved here, but not on these hops of `:p2p_write`.
    * `{:storage_error, message}`, `{:corrupt, message}`,
      `{:internal_error, message}`: failures of the engine, or of the
      network on the way to a remote barrel.
  """
  @type reason ::
          :not_found
          | :already_exists
          | :conflict
          | :closed
          | {:invalid_name, term()}
          | {:bad_param, term()}
          | {:invalid_doc_id, term()}
          | {:bad_rev, term()}
          | {:bad_doc, term()}
          | {:bad_option, term()}
          | {:bad_query, term()}
          | {:bad_pattern, term()}
          | {:bad_arg, atom()}
          | {:bad_endpoint, term()}
          | {:bad_attachment, String.t()}
          | {:missing_stub, String.t()}
          | {:attachment_too_large, non_neg_integer()}
          | {:file_error, term()}
          | {:p2p_write_failed, docid(), rev(), [{String.t() | charlist(), {:error, term()}}]}
          | {:storage_error, String.t()}
          | {:corrupt, String.t()}
          | {:internal_error, String.t()}

  @typedoc "The result of saving one document."
  @type save_result :: {:ok, docid(), rev()} | {:error, reason()}

  @typedoc "Settings of a new barrel, as a map or a keyword list."
  @type params ::
          %{optional(:revs_limit) => pos_integer(), optional(:sync) => boolean()}
          | [revs_limit: pos_integer(), sync: boolean()]

  @typedoc """
  Another barrel for `:p2p_write` and `:p2p_read`: `:host` is where its
  Barrel HTTP server listens, `"HOST:PORT"`, `"http://HOST:PORT"` or
  `"https://HOST:PORT"` (the `:url` of `http_info/1` will do), and `:name`
  the barrel there. A hop can name the next one under the same key, a
  `:p2p_write` hop under `:p2p_write` and a `:p2p_read` hop under
  `:p2p_read`, to make a chain:
  `%{host: "10.0.0.2:7080", name: "users", p2p_write: %{host: "10.0.0.3:7080", name: "users"}}`.
  """
  @type hop :: %{
          required(:host) => String.t() | charlist(),
          required(:name) => name(),
          optional(:p2p_write) => hop(),
          optional(:p2p_read) => hop()
        }

  @type save_option :: {:new_edits, boolean()} | {:p2p_write, hop()}

  @type fetch_option ::
          {:rev, rev()}
          | {:revs, boolean()}
          | {:conflicts, boolean()}
          | {:attachments, boolean()}
          | {:open_revs, :all | [rev()]}
          | {:p2p_read, hop()}
          | {:cache, boolean()}
          | {:null, atom()}

  @typedoc "An attachment name: 1 to 1024 bytes of UTF-8, not starting with `_`."
  @type attachment_name :: String.t()

  @typedoc """
  What `put_attachment/6` writes: the content, `{:stream, enumerable}` or
  `{:stream, fun}` giving it chunk by chunk, or `{:file, path}`.
  """
  @type attachment_content ::
          binary()
          | {:stream, Enumerable.t() | (() -> {:ok, iodata()} | :eof | {:error, term()})}
          | {:file, Path.t()}

  @type attachment_option ::
          {:content_type, String.t()}
          | {:digest, String.t()}
          | {:length, non_neg_integer()}
          | {:max_size, non_neg_integer()}

  @type attachment_stream_option ::
          {:rev, rev()} | {:range, {non_neg_integer(), non_neg_integer()}}

  @typedoc """
  What a revision records of an attachment (its stub): `:content_type`,
  `:revpos` (the generation of the revision that last changed it), and
  `:digest` (`"md5-"` and the base64 MD5 of the content) and `:length` for
  a content stored here, or `:url` for a linked attachment.
  """
  @type attachment_info :: %{
          required(:content_type) => String.t(),
          required(:revpos) => pos_integer(),
          optional(:digest) => String.t(),
          optional(:length) => non_neg_integer(),
          optional(:url) => String.t()
        }

  @typedoc "An attachment being read, from `attachment_stream/4`."
  @type attachment_stream :: reference()

  @type fold_option ::
          {:start_key, docid()}
          | {:end_key, docid()}
          | {:inclusive_end, boolean()}
          | {:limit, non_neg_integer()}
          | {:include_docs, boolean()}
          | {:null, atom()}

  @typedoc "What a `fold_docs/4` function returns: go on, or stop with or without a new acc."
  @type fold_result(acc) :: {:ok, acc} | {:stop, acc} | :stop

  @typedoc """
  A field of a document: `"$/locations/*/country"`, or a list of segments
  such as `["locations", :*, "country"]`: strings are object keys,
  non-negative integers array indexes, and `:*` any array index.
  """
  @type path :: String.t() | [String.t() | non_neg_integer() | :*]

  @typedoc "A value that can be indexed and queried: JSON `null` is `nil` (or `:null`)."
  @type scalar :: String.t() | number() | boolean() | nil | :null

  @type query_option ::
          {:equal, scalar()}
          | {:prefix, String.t()}
          | {:start_at, scalar()}
          | {:end_at, scalar()}
          | {:start_inclusive, boolean()}
          | {:end_inclusive, boolean()}
          | {:limit, non_neg_integer() | :infinity}
          | {:descending, boolean()}
          | {:include_docs, boolean()}
          | {:null, atom()}

  @typedoc "Options of `query/5` and `find/3`, as a keyword list."
  @type query_opts :: [query_option()]

  @typedoc ~S'A query for `find/3`: `"$/path/to/value"` or `{path, query_opts}`.'
  @type query :: String.t() | {path(), query_opts()}

  @typedoc "A sequence number: every document write takes the barrel's next one, from 1."
  @type seq :: non_neg_integer()

  @typedoc """
  An entry of the changes feed:
  `%{"id" => docid, "rev" => winning_rev, "seq" => seq, "changes" => [rev]}`,
  plus `"deleted" => true` for a deletion and `"doc" => doc` with
  `include_docs: true`.
  """
  @type change :: %{optional(String.t()) => term()}

  @typedoc """
  A path pattern, as in `"/type/user"` or `"/locations/+/country/france"`:
  `+` is one segment (key, array index or value), a final `#` any remaining
  segments, and `"/*"` or `"#"` every document.
  """
  @type pattern :: String.t()

  @type changes_option ::
          {:include_docs, boolean()}
          | {:style, :main_only | :all_docs}
          | {:limit, non_neg_integer() | :infinity}
          | {:descending, boolean()}
          | {:filter, pattern() | [pattern()]}
          | {:null, atom()}

  @type stream_option ::
          {:since, seq() | :now}
          | {:chunk, pos_integer()}
          | {:include_docs, boolean()}
          | {:style, :main_only | :all_docs}
          | {:filter, pattern() | [pattern()]}
          | {:null, atom()}

  @type listener_option ::
          {:subscribe_to, [pattern()]}
          | {:since, seq() | :now}
          | {:to, pid()}
          | {:callback_fun, (change() -> term())}
          | {:include_docs, boolean()}
          | {:style, :main_only | :all_docs}
          | {:max_queue, pos_integer()}
          | {:window, pos_integer()}
          | {:null, atom()}

  @type http_option ::
          {:ip, :inet.ip_address()}
          | {:port, :inet.port_number()}
          | {:basic_auth, [{String.t(), String.t()}]}
          | {:tokens, [String.t()]}
          | {:tls, {Path.t(), Path.t()}}
          | {:cors, :none | :any | [String.t()]}
          | {:max_body, pos_integer()}
          | {:max_attachment_size, non_neg_integer()}

  @typedoc """
  Where a server started by `start_http/1` listens: `url` is
  `"http://ip:port"`, or `"https://ip:port"` with `:tls` (an IPv6 address
  in brackets).
  """
  @type http_info :: %{ip: :inet.ip_address(), port: :inet.port_number(), url: String.t()}

  @typedoc """
  One side of a replication: the name of a barrel of this node, or the URL
  of a remote database: `"http://HOST:PORT/barrels/NAME"` (or `https://`)
  for a barrel over the CouchDB replication protocol, which also takes the
  URL of a CouchDB or PouchDB-server database, and `"ws://HOST:PORT/NAME"`
  (or `wss://`) for a barrel over Barrel's WebSocket stream.
  """
  @type endpoint :: name() | String.t()

  @typedoc ~S'A replication, from `replicate/3`: a string such as `"rep-7D1F3A90C2B4E685"`.'
  @type replication_id :: String.t()

  @typedoc """
  Where a replication is: `:running`, `:idle` (continuous and caught up:
  waiting for changes), `:retrying` (continuous, after an error, waiting
  before it tries again), or one of the final states `:completed`, `:failed`
  (one-shot) and `:cancelled`.
  """
  @type replication_state :: :running | :idle | :retrying | :completed | :failed | :cancelled

  @typedoc """
  The progress of one leg of a replication, as the `:to` process receives
  it in `{:barrel_replication, replication_id, progress}` after each batch
  and each change of state:

    * `:leg`: `:push` (source to target) or, with `sync: true`, `:pull`
      (target to source).
    * `:docs_read`: changed documents read from the source.
    * `:docs_written`: revisions written to the target.
    * `:missing_checked`: revisions the target said it did not have.
    * `:attachments_copied`, `:attachment_bytes`: attachment contents sent
      to the target (only those it did not have) and their bytes.
    * `:last_seq`: the source sequence of the last checkpoint.
    * `:errors`, `:last_error`: errors so far, and the message of the latest
      (`:undefined` when there was none).
  """
  @type replication_progress :: %{
          optional(:leg) => :push | :pull,
          state: replication_state(),
          docs_read: non_neg_integer(),
          docs_written: non_neg_integer(),
          missing_checked: non_neg_integer(),
          attachments_copied: non_neg_integer(),
          attachment_bytes: non_neg_integer(),
          last_seq: seq(),
          errors: non_neg_integer(),
          last_error: String.t() | :undefined
        }

  @typedoc """
  A replication as `replication_info/1` tells it: its `:id`, its `:source`
  and `:target` as given, whether it is `:continuous` and `:sync`, its
  overall `:state` (of the two legs of a `sync` one, the one that most needs
  attention: `:failed`, then `:retrying`, `:running`, `:idle`, `:cancelled`,
  `:completed`), the counters of its legs added up, the `:last_error` of a
  leg, and in `:legs` the latest `t:replication_progress/0` of each leg
  (just `%{state: :running}` until the leg first reports).
  """
  @type replication_info :: %{
          id: replication_id(),
          source: endpoint(),
          target: endpoint(),
          continuous: boolean(),
          sync: boolean(),
          state: replication_state(),
          docs_read: non_neg_integer(),
          docs_written: non_neg_integer(),
          errors: non_neg_integer(),
          last_error: String.t() | :undefined,
          legs: %{optional(:push | :pull) => map()}
        }

  @type replication_option ::
          {:continuous, boolean()}
          | {:sync, boolean()}
          | {:filter, [pattern()]}
          | {:since, seq()}
          | {:batch_size, pos_integer()}
          | {:to, pid()}
          | {:persist, boolean()}
          | {:create_target, boolean()}
          | {:auth, {:basic, String.t(), String.t()} | {:bearer, String.t()}}

  ## Barrels

  @doc """
  Creates a barrel named `name`.

  `params` is a map or a keyword list; all keys are optional:

    * `:revs_limit` (default `1000`): revisions kept per branch of a
      document's history.
    * `:sync` (default `false`): fsync every commit. Without it a commit
      survives a crash of the VM, but the last writes may be lost if the
      machine loses power.

  Other keys are accepted and ignored.

      iex> Barrel.create_barrel("docs-create", revs_limit: 100)
      :ok
      iex> Barrel.create_barrel("docs-create")
      {:error, :already_exists}
      iex> Barrel.create_barrel("_docs")
      {:error, {:invalid_name, "_docs"}}
  """
  @spec create_barrel(name(), params()) :: :ok | {:error, reason()}
  def create_barrel(name, params \\ %{}) do
    # A list that is not a keyword list goes through as is: :barrel refuses
    # it with {:bad_param, params}, or {:invalid_name, name} if that is wrong too.
    params = if Keyword.keyword?(params), do: to_map(params), else: params
    :barrel.create_barrel(name, params)
  end

  @doc """
  Opens a handle on an existing barrel.

  Several handles can be open on the same barrel; they all see the same
  documents.

      iex> :ok = Barrel.create_barrel("docs-open")
      iex> {:ok, barrel} = Barrel.open("docs-open")
      iex> is_reference(barrel)
      true
      iex> Barrel.open("docs-nope")
      {:error, :not_found}
  """
  @spec open(name()) :: {:ok, barrel()} | {:error, reason()}
  def open(name), do: :barrel.open(name)

  @doc """
  Closes a handle: later calls with it return `{:error, :closed}`. Other
  handles on the same barrel are not affected. Closing twice is fine.

      iex> :ok = Barrel.create_barrel("docs-close")
      iex> {:ok, barrel} = Barrel.open("docs-close")
      iex> Barrel.close(barrel)
      :ok
      iex> Barrel.fetch_doc(barrel, "any")
      {:error, :closed}
  """
  @spec close(barrel()) :: :ok | {:error, reason()}
  def close(barrel), do: :barrel.close(barrel)

  @doc """
  Deletes a barrel and all its documents. Handles still open on it return
  `{:error, :not_found}`. The name can be used again.

      iex> :ok = Barrel.create_barrel("docs-delete")
      iex> {:ok, barrel} = Barrel.open("docs-delete")
      iex> Barrel.delete_barrel("docs-delete")
      :ok
      iex> Barrel.fetch_doc(barrel, "any")
      {:error, :not_found}
      iex> Barrel.delete_barrel("docs-delete")
      {:error, :not_found}
  """
  @spec delete_barrel(name()) :: :ok | {:error, reason()}
  def delete_barrel(name), do: :barrel.delete_barrel(name)

  @doc """
  Compacts the node's store now (blocking, on a dirty scheduler): the space
  of deleted barrels comes back at once instead of as RocksDB's compactions
  reach it. Removed attachment contents need no call.

      iex> Barrel.compact()
      :ok
  """
  @spec compact() :: :ok | {:error, reason()}
  def compact, do: :barrel.compact()

  @doc """
  The store's background work right now (see `:barrel.store_info/0`):
  `:index_queue` (documents not in the path index yet), RocksDB's
  `:flushes_running`, `:compactions_running`, `:flush_pending`,
  `:compaction_pending`, `:pending_compaction_bytes` and `:memtable_bytes`;
  `:idle` is `true` when nothing runs or is due.

      iex> {:ok, %{idle: idle, index_queue: queued}} = Barrel.store_info()
      iex> is_boolean(idle) and is_integer(queued)
      true
  """
  @spec store_info() :: {:ok, map()} | {:error, reason()}
  def store_info, do: :barrel.store_info()

  @doc """
  Names of all the barrels of this node, sorted.

      iex> :ok = Barrel.create_barrel("docs-list")
      iex> "docs-list" in Barrel.list_barrels()
      true
  """
  @spec list_barrels() :: [name()] | {:error, reason()}
  def list_barrels, do: :barrel.list_barrels()

  @doc """
  Counters and settings of a barrel, by name or by handle:

    * `:docs_count`: live documents.
    * `:deleted_count`: deleted documents.
    * `:updated_seq`: sequence number of the last change.
    * `:data_size`: bytes of stored documents, before compression.
    * `:disk_size`: approximate bytes of data flushed to disk.
    * `:revs_limit`, `:sync`, `:name`: as created.

  Example:

      iex> :ok = Barrel.create_barrel("docs-infos", sync: true)
      iex> {:ok, barrel} = Barrel.open("docs-infos")
      iex> {:ok, _, _} = Barrel.save_doc(barrel, %{"id" => "a"})
      iex> {:ok, infos} = Barrel.barrel_infos("docs-infos")
      iex> Map.take(infos, [:name, :docs_count, :deleted_count, :updated_seq, :sync])
      %{name: "docs-infos", docs_count: 1, deleted_count: 0, updated_seq: 1, sync: true}
  """
  @spec barrel_infos(name() | barrel()) :: {:ok, map()} | {:error, reason()}
  def barrel_infos(name_or_barrel), do: :barrel.barrel_infos(name_or_barrel)

  ## Documents

  @doc """
  Saves a document and returns its id and new revision.

  Without `"_rev"` the document is created, with a generated id when `"id"`
  is absent; creating over a live document returns `{:error, :conflict}`, and
  a deleted document can be created again. To update, pass the current
  revision in `"_rev"`; a revision that is not current returns
  `{:error, :conflict}`.

  Attachments go under `"_attachments"`, one map per name, with the raw
  bytes as a binary under `"data"` and optionally `"content_type"` (default
  `"application/octet-stream"`), `"digest"` and `"length"` (checked against
  the data). They are stored as stubs (see `t:attachment_info/0`); a stub
  sent back (`%{"stub" => true}`, as fetched) keeps its attachment, and an
  attachment left out is removed. `%{"url" => url}` links to content kept
  elsewhere.

  Options:

    * `new_edits: false`: store the document as the revision given in
      `"_rev"`, with its history in `"_revisions"`
      (`%{"start" => generation, "ids" => [hash, ...]}`, newest first). The
      revision is added to the tree even when that creates a conflict: this
      is how replication writes.
    * `p2p_write: hop` (see `t:hop/0`): once saved here, the document (every
      leaf revision, with its history) is pushed over HTTP to the hop and to
      each hop chained to it, all directly from this node; a missing barrel
      on a hop is created. When a hop cannot be written, the result is
      `{:error, {:p2p_write_failed, docid, rev, [{host, {:error, reason}}]}}`
      for the hops that failed; nothing is undone, neither the local save
      nor the hops that worked, and a replication between the nodes catches
      up later. The "Replication" part of the module documentation has an
      example.

  Example:

      iex> :ok = Barrel.create_barrel("docs-save")
      iex> {:ok, barrel} = Barrel.open("docs-save")
      iex> {:ok, "a", rev1} = Barrel.save_doc(barrel, %{"id" => "a", "v" => 1})
      iex> {:ok, "a", rev2} = Barrel.save_doc(barrel, %{"id" => "a", "_rev" => rev1, "v" => 2})
      iex> String.starts_with?(rev2, "2-")
      true
      iex> Barrel.save_doc(barrel, %{"id" => "a", "_rev" => rev1, "v" => 3})
      {:error, :conflict}
      iex> Barrel.save_doc(barrel, %{"id" => "b", "at" => {2024, 1, 1}})
      {:error, {:bad_doc, {:invalid_value, "/at"}}}
  """
  @spec save_doc(barrel(), doc(), [save_option()]) :: save_result()
  def save_doc(barrel, doc, opts \\ []) do
    with {:ok, opts} <- options(opts), do: :barrel.save_doc(barrel, doc, opts)
  end

  @doc """
  Saves many documents in one atomic write and returns one result per
  document, in order. A document that is refused (a conflict, bad input)
  does not stop the others. The option is `:new_edits`, as for
  `save_doc/3`.

      iex> :ok = Barrel.create_barrel("docs-save-docs")
      iex> {:ok, barrel} = Barrel.open("docs-save-docs")
      iex> {:ok, [{:ok, "a", _rev}, {:error, :conflict}, {:error, {:invalid_doc_id, "_b"}}]} =
      ...>   Barrel.save_docs(barrel, [%{"id" => "a"}, %{"id" => "a"}, %{"id" => "_b"}])
  """
  @spec save_docs(barrel(), [doc()], [{:new_edits, boolean()}]) ::
          {:ok, [save_result()]} | {:error, reason()}
  def save_docs(barrel, docs, opts \\ []) do
    with {:ok, opts} <- options(opts), do: :barrel.save_docs(barrel, docs, opts)
  end

  @doc """
  Fetches a document: its winning revision, with `"id"` and `"_rev"`. A
  deleted document returns `{:error, :not_found}`.

  Options:

    * `rev: rev`: that revision instead of the winner. Any current leaf can be
      read, including a deleted one (it has `"_deleted" => true`); older
      revisions are not kept.
    * `revs: true`: add `"_revisions"`, the revision history:
      `%{"start" => generation, "ids" => [hash, ...]}`, newest first.
    * `conflicts: true`: add `"_conflicts"`, the other live leaf revisions,
      when there are any.
    * `attachments: true`: each attachment stored here comes with its
      content, `"data" => binary`, instead of `"stub" => true` (linked ones
      stay as they are). Every content is read whole: `attachment_chunks/4`
      reads a big one in chunks.
    * `open_revs: :all | [rev]`: return `{:ok, [{:ok, doc} | {:missing, rev}]}`
      for every leaf (deleted ones included) or for the given revisions;
      `:rev`, `:conflicts` and `:attachments` do not apply then.
    * `p2p_read: hop` (see `t:hop/0`): when the document is not found here,
      ask the hop over HTTP, then each hop chained to it in turn, skipping
      the ones that are down or do not have it; `{:error, :not_found}` when
      none has it. A hop answers with its winning revision, without
      `"_revisions"`: `:rev`, `:revs`, `:conflicts` and `:open_revs` apply
      to the local read only. See the "Replication" part of the module
      documentation for an example.
    * `cache: true`, with `:p2p_read`: store a document read from a hop here,
      as the same revision with its history, so that the next read finds it.
    * `null: atom` (default `nil`): what JSON `null` comes back as.

  Example:

      iex> :ok = Barrel.create_barrel("docs-fetch")
      iex> {:ok, barrel} = Barrel.open("docs-fetch")
      iex> {:ok, "a", rev1} = Barrel.save_doc(barrel, %{"id" => "a", "note" => nil})
      iex> {:ok, "a", rev2} = Barrel.save_doc(barrel, %{"id" => "a", "_rev" => rev1, "note" => "hi"})
      iex> Barrel.fetch_doc(barrel, "a")
      {:ok, %{"id" => "a", "_rev" => rev2, "note" => "hi"}}
      iex> {:ok, %{"_revisions" => %{"start" => 2, "ids" => [_hash2, _hash1]}}} =
      ...>   Barrel.fetch_doc(barrel, "a", revs: true)
      iex> Barrel.fetch_doc(barrel, "a", rev: rev1)
      {:error, :not_found}
      iex> Barrel.fetch_doc(barrel, "a", open_revs: [rev2, rev1])
      {:ok, [{:ok, %{"id" => "a", "_rev" => rev2, "note" => "hi"}}, {:missing, rev1}]}
  """
  @spec fetch_doc(barrel(), docid(), [fetch_option()]) ::
          {:ok, doc()} | {:ok, [{:ok, doc()} | {:missing, rev()}]} | {:error, reason()}
  def fetch_doc(barrel, docid, opts \\ []) do
    with {:ok, opts} <- options(opts) do
      :barrel.fetch_doc(barrel, docid, Map.put_new(opts, :null, nil))
    end
  end

  @doc """
  Deletes a document by writing a tombstone on top of `rev`, its current
  revision, and returns the tombstone's revision. The document then fetches
  as `{:error, :not_found}` and can be created again.

      iex> :ok = Barrel.create_barrel("docs-delete-doc")
      iex> {:ok, barrel} = Barrel.open("docs-delete-doc")
      iex> {:ok, "a", rev} = Barrel.save_doc(barrel, %{"id" => "a"})
      iex> {:ok, "a", tombstone} = Barrel.delete_doc(barrel, "a", rev)
      iex> Barrel.fetch_doc(barrel, "a", rev: tombstone)
      {:ok, %{"id" => "a", "_rev" => tombstone, "_deleted" => true}}
      iex> Barrel.delete_doc(barrel, "a", rev)
      {:error, :conflict}
  """
  @spec delete_doc(barrel(), docid(), rev()) :: save_result()
  def delete_doc(barrel, docid, rev), do: :barrel.delete_doc(barrel, docid, rev)

  @doc """
  Folds over the live documents of a barrel in id order (bytewise UTF-8
  order), reading one consistent snapshot per chunk of 256 documents.

  `fun.(doc, acc)` returns `{:ok, acc}` to go on, `{:stop, acc}` to end with
  `acc`, or `:stop` to end with the accumulator it was given. Any other
  return raises an `ErlangError` with `{:bad_fold_return, value}`. The fold
  returns `{:ok, acc}`.

  Options:

    * `start_key: docid`: the first id (inclusive).
    * `end_key: docid`: the last id, inclusive unless `inclusive_end: false`.
    * `limit: n`: at most `n` documents.
    * `include_docs: false`: `doc` is only `%{"id" => id, "_rev" => rev}`.
    * `null: atom` (default `nil`): what JSON `null` comes back as.

  Example:

      iex> :ok = Barrel.create_barrel("docs-fold")
      iex> {:ok, barrel} = Barrel.open("docs-fold")
      iex> {:ok, _results} = Barrel.save_docs(barrel, for(id <- ~w(a b c d), do: %{"id" => id}))
      iex> ids = fn doc, acc -> {:ok, acc ++ [doc["id"]]} end
      iex> Barrel.fold_docs(barrel, ids, [], start_key: "b", include_docs: false)
      {:ok, ["b", "c", "d"]}
      iex> Barrel.fold_docs(barrel, ids, [], end_key: "c", inclusive_end: false)
      {:ok, ["a", "b"]}
      iex> Barrel.fold_docs(barrel, fn doc, acc -> {:stop, [doc["id"] | acc]} end, [])
      {:ok, ["a"]}
  """
  @spec fold_docs(barrel(), (doc(), acc -> fold_result(acc)), acc, [fold_option()]) ::
          {:ok, acc} | {:error, reason()}
        when acc: term()
  def fold_docs(barrel, fun, acc, opts \\ []) do
    with {:ok, opts} <- options(opts) do
      :barrel.fold_docs(barrel, fun, acc, Map.put_new(opts, :null, nil))
    end
  end

  ## Attachments

  @doc """
  Adds (or replaces) attachment `name` of a document, in a new revision on
  top of `rev`, and returns the document's id and new revision. With `rev`
  `nil` the document is created with only this attachment (it must not
  exist, or be deleted: else `{:error, :conflict}`).

  `content` is one of:

    * a binary: the content itself;
    * `{:stream, enumerable}`: chunks (iodata) taken one at a time, such as
      `File.stream!(path, [], 65_536)` or a `Stream` that makes them;
    * `{:stream, fun}`: `fun.()` returns `{:ok, chunk}` for each chunk, then
      `:eof` (or `{:error, reason}` to give up, returned as is);
    * `{:file, path}`: the file, read in chunks of 1 MiB (a file that cannot
      be read gives `{:error, {:file_error, reason}}`).

  Chunks are written as they come: the whole content is never held in
  memory.

  Options:

    * `content_type: type` (default `"application/octet-stream"`).
    * `digest: "md5-" <> base64` and `length: bytes`: checked once the
      content is written; a mismatch is `{:error, {:bad_attachment, why}}`.
    * `max_size: bytes` (default 16 GiB): a longer content stops the write
      with `{:error, {:attachment_too_large, max_size}}`.

  When a write fails nothing is saved, the document keeps its current
  revision, and what was written is deleted.

      iex> :ok = Barrel.create_barrel("docs-put-attachment")
      iex> {:ok, barrel} = Barrel.open("docs-put-attachment")
      iex> {:ok, "a", rev1} = Barrel.put_attachment(barrel, "a", nil, "a.txt", "hello", content_type: "text/plain")
      iex> chunks = Stream.map(1..3, fn i -> "line \#{i}\\n" end)
      iex> {:ok, "a", _rev2} = Barrel.put_attachment(barrel, "a", rev1, "b.txt", {:stream, chunks})
      iex> Barrel.fetch_attachment(barrel, "a", "b.txt")
      {:ok, "line 1\\nline 2\\nline 3\\n"}
      iex> Barrel.put_attachment(barrel, "a", rev1, "c.txt", "late")
      {:error, :conflict}
      iex> Barrel.put_attachment(barrel, "b", nil, "big.bin", "12345", max_size: 4)
      {:error, {:attachment_too_large, 4}}
  """
  @spec put_attachment(
          barrel(),
          docid(),
          rev() | nil,
          attachment_name(),
          attachment_content(),
          [attachment_option()]
        ) :: save_result()
  def put_attachment(barrel, docid, rev, name, content, opts \\ []) do
    rev = if rev == nil, do: :undefined, else: rev

    with {:ok, opts} <- options(opts) do
      case content do
        {:stream, fun} when is_function(fun, 0) ->
          :barrel.put_attachment(barrel, docid, rev, name, content, opts)

        {:stream, enumerable} ->
          put_chunks(barrel, docid, rev, name, enumerable, opts)

        _ ->
          :barrel.put_attachment(barrel, docid, rev, name, content, opts)
      end
    end
  end

  # Writes an enumerable's chunks through an attachment writer; the writer is
  # cancelled (what it wrote deleted) unless it finished.
  defp put_chunks(barrel, docid, rev, name, enumerable, opts) do
    with true <- Enumerable.impl_for(enumerable) != nil || {:error, {:bad_arg, :content}},
         {:ok, writer} <- :barrel.attachment_writer(barrel, docid, rev, name, opts) do
      try do
        written =
          Enum.reduce_while(enumerable, :ok, fn chunk, :ok ->
            case :barrel.write_attachment(writer, chunk) do
              :ok -> {:cont, :ok}
              error -> {:halt, error}
            end
          end)

        with :ok <- written, do: :barrel.finish_attachment(writer)
      after
        :barrel.cancel_attachment(writer)
      end
    end
  end

  @doc """
  The whole content of attachment `name` of a document's winning revision
  (or of the leaf `rev: rev`): `{:ok, binary}`, or `{:ok, {:url, url}}` for
  a linked attachment. `{:error, :not_found}` when the document or the
  attachment does not exist. For big contents, `attachment_chunks/4` reads
  in chunks.

      iex> :ok = Barrel.create_barrel("docs-fetch-attachment")
      iex> {:ok, barrel} = Barrel.open("docs-fetch-attachment")
      iex> atts = %{
      ...>   "a.txt" => %{"content_type" => "text/plain", "data" => "hello"},
      ...>   "logo.png" => %{"url" => "https://example.com/logo.png"}
      ...> }
      iex> {:ok, "a", _rev} = Barrel.save_doc(barrel, %{"id" => "a", "_attachments" => atts})
      iex> Barrel.fetch_attachment(barrel, "a", "a.txt")
      {:ok, "hello"}
      iex> Barrel.fetch_attachment(barrel, "a", "logo.png")
      {:ok, {:url, "https://example.com/logo.png"}}
      iex> Barrel.fetch_attachment(barrel, "a", "nope.txt")
      {:error, :not_found}
  """
  @spec fetch_attachment(barrel(), docid(), attachment_name(), [{:rev, rev()}]) ::
          {:ok, binary() | {:url, String.t()}} | {:error, reason()}
  def fetch_attachment(barrel, docid, name, opts \\ []) do
    with {:ok, opts} <- options(opts), do: :barrel.fetch_attachment(barrel, docid, name, opts)
  end

  @doc """
  Removes attachment `name` of a document, in a new revision on top of
  `rev`: `{:ok, docid, new_rev}`. `{:error, :not_found}` when that revision
  has no such attachment, `{:error, :conflict}` when `rev` is not current.

      iex> :ok = Barrel.create_barrel("docs-delete-attachment")
      iex> {:ok, barrel} = Barrel.open("docs-delete-attachment")
      iex> {:ok, "a", rev1} = Barrel.put_attachment(barrel, "a", nil, "a.txt", "hello")
      iex> {:ok, "a", rev2} = Barrel.delete_attachment(barrel, "a", rev1, "a.txt")
      iex> Barrel.fetch_doc(barrel, "a")
      {:ok, %{"id" => "a", "_rev" => rev2}}
      iex> Barrel.delete_attachment(barrel, "a", rev2, "a.txt")
      {:error, :not_found}
  """
  @spec delete_attachment(barrel(), docid(), rev(), attachment_name()) :: save_result()
  def delete_attachment(barrel, docid, rev, name),
    do: :barrel.delete_attachment(barrel, docid, rev, name)

  @doc """
  What a revision records of attachment `name` (the winner, or the leaf
  `rev: rev`): see `t:attachment_info/0`.

      iex> :ok = Barrel.create_barrel("docs-attachment-info")
      iex> {:ok, barrel} = Barrel.open("docs-attachment-info")
      iex> {:ok, "a", _rev} = Barrel.put_attachment(barrel, "a", nil, "a.txt", "hello", content_type: "text/plain")
      iex> Barrel.attachment_info(barrel, "a", "a.txt")
      {:ok, %{content_type: "text/plain", digest: "md5-XUFAKrxLKna5cZ2REBfFkg==", length: 5, revpos: 1}}
  """
  @spec attachment_info(barrel(), docid(), attachment_name(), [{:rev, rev()}]) ::
          {:ok, attachment_info()} | {:error, reason()}
  def attachment_info(barrel, docid, name, opts \\ []) do
    with {:ok, opts} <- options(opts), do: :barrel.attachment_info(barrel, docid, name, opts)
  end

  @doc """
  Opens attachment `name` of a document for reading chunk by chunk with
  `read_attachment/1`: `{:ok, stream, info}`, with `info` as from
  `attachment_info/4`. A linked attachment has no content here:
  `{:error, :not_found}` (its `:url` is in its info). An open stream keeps
  its content readable to the end even if the document is updated without
  it or deleted meanwhile (the content is removed once the stream is closed
  or garbage collected).

  Options:

    * `rev: rev`: a leaf revision instead of the winner.
    * `range: {start, stop}`: only the bytes from `start` up to, not
      including, `stop` (clamped to the length).

  Example:

      iex> :ok = Barrel.create_barrel("docs-attachment-stream")
      iex> {:ok, barrel} = Barrel.open("docs-attachment-stream")
      iex> {:ok, "a", _rev} = Barrel.put_attachment(barrel, "a", nil, "a.txt", "hello")
      iex> {:ok, stream, %{length: 5}} = Barrel.attachment_stream(barrel, "a", "a.txt", range: {1, 3})
      iex> Barrel.read_attachment(stream)
      {:ok, "el"}
      iex> Barrel.read_attachment(stream)
      :eof
  """
  @spec attachment_stream(barrel(), docid(), attachment_name(), [attachment_stream_option()]) ::
          {:ok, attachment_stream(), attachment_info()} | {:error, reason()}
  def attachment_stream(barrel, docid, name, opts \\ []) do
    with {:ok, opts} <- options(opts), do: :barrel.attachment_stream(barrel, docid, name, opts)
  end

  @doc """
  The next chunk (at most 128 KiB) of an attachment opened with
  `attachment_stream/4`: `{:ok, binary}`, then `:eof` at the end.
  """
  @spec read_attachment(attachment_stream()) :: {:ok, binary()} | :eof | {:error, reason()}
  def read_attachment(stream), do: :barrel.read_attachment(stream)

  @doc """
  Folds over the content of attachment `name` chunk by chunk, with the
  options of `attachment_stream/4`. `fun.(chunk, acc)` returns `{:ok, acc}`
  to go on, `{:stop, acc}` or `:stop` to end, as for `fold_docs/4`.

      iex> :ok = Barrel.create_barrel("docs-fold-attachment")
      iex> {:ok, barrel} = Barrel.open("docs-fold-attachment")
      iex> {:ok, "a", _rev} = Barrel.put_attachment(barrel, "a", nil, "a.bin", :binary.copy("x", 300_000))
      iex> Barrel.fold_attachment(barrel, "a", "a.bin", fn chunk, sizes -> {:ok, sizes ++ [byte_size(chunk)]} end, [])
      {:ok, [131_072, 131_072, 37_856]}
  """
  @spec fold_attachment(
          barrel(),
          docid(),
          attachment_name(),
          (binary(), acc -> fold_result(acc)),
          acc,
          [attachment_stream_option()]
        ) :: {:ok, acc} | {:error, reason()}
        when acc: term()
  def fold_attachment(barrel, docid, name, fun, acc, opts \\ []) do
    with {:ok, opts} <- options(opts) do
      :barrel.fold_attachment(barrel, docid, name, fun, acc, opts)
    end
  end

  @doc """
  The content of attachment `name` as a lazy stream of binaries (at most
  128 KiB each), read when the stream runs, with the options of
  `attachment_stream/4`. Errors are raised when the stream runs, as an
  `ErlangError` whose `original` is the reason `attachment_stream/4` would
  return.

  To copy an attachment into a file without holding it in memory:

      iex> :ok = Barrel.create_barrel("docs-attachment-chunks")
      iex> {:ok, barrel} = Barrel.open("docs-attachment-chunks")
      iex> {:ok, "a", _rev} = Barrel.put_attachment(barrel, "a", nil, "a.txt", "hello")
      iex> path = Path.join(System.tmp_dir!(), "barrel-doctest-\#{System.unique_integer([:positive])}")
      iex> Barrel.attachment_chunks(barrel, "a", "a.txt") |> Stream.into(File.stream!(path)) |> Stream.run()
      :ok
      iex> File.read!(path)
      "hello"
      iex> File.rm!(path)
      :ok
      iex> Barrel.attachment_chunks(barrel, "a", "nope.txt") |> Enum.to_list()
      ** (ErlangError) Erlang error: :not_found
  """
  @spec attachment_chunks(barrel(), docid(), attachment_name(), [attachment_stream_option()]) ::
          Enumerable.t()
  def attachment_chunks(barrel, docid, name, opts \\ []) do
    Stream.resource(
      fn ->
        case attachment_stream(barrel, docid, name, opts) do
          {:ok, stream, _info} -> stream
          {:error, reason} -> raise ErlangError, original: reason
        end
      end,
      fn stream ->
        case read_attachment(stream) do
          {:ok, chunk} -> {[chunk], stream}
          :eof -> {:halt, stream}
          {:error, reason} -> raise ErlangError, original: reason
        end
      end,
      fn _stream -> :ok end
    )
  end

  ## Queries

  @doc """
  Folds over the documents whose value at `path` matches, in index order: by
  value (`nil`, `false`, `true`, numbers, then strings compared lowercased),
  then by document id. With `*` in the path, by the array index it stands
  for first, and each document once, at its first match in that order. `fun`
  and its returns are as for `fold_docs/4`. See "Path index and queries"
  above for what is indexed.

  Selection options, at most one kind; with none, every document with a
  scalar at `path` matches:

    * `equal: value`: values equal to `value` (strings compared lowercased).
    * `prefix: string`: strings starting with `string` (compared lowercased).
    * `start_at: value`, `end_at: value`: values between these bounds, in the
      type order, inclusive unless `start_inclusive: false` or
      `end_inclusive: false`. Either bound can be left out.

  Other options:

    * `limit: n` (default `:infinity`): at most `n` documents.
    * `descending: true`: highest value first.
    * `include_docs: false`: instead of the document, each row is
      `%{"id" => id, "value" => value}`, with the value as indexed
      (strings lowercased).
    * `null: atom` (default `nil`): what JSON `null` comes back as.

  Example:

      iex> :ok = Barrel.create_barrel("docs-query")
      iex> {:ok, barrel} = Barrel.open("docs-query")
      iex> {:ok, _results} =
      ...>   Barrel.save_docs(barrel, [
      ...>     %{"id" => "ann", "age" => 31, "pets" => [%{"kind" => "Cat"}]},
      ...>     %{"id" => "bob", "age" => 17.5, "pets" => [%{"kind" => "dog"}, %{"kind" => "cat"}]},
      ...>     %{"id" => "cid", "age" => 45}
      ...>   ])
      iex> ids = fn doc, acc -> {:ok, acc ++ [doc["id"]]} end
      iex> Barrel.query(barrel, "$/age", ids, [], start_at: 18, end_at: 45, end_inclusive: false)
      {:ok, ["ann"]}
      iex> Barrel.query(barrel, ["pets", :*, "kind"], ids, [], equal: "cat")
      {:ok, ["ann", "bob"]}
      iex> Barrel.query(barrel, "$/age", fn row, acc -> {:ok, [row | acc]} end, [], include_docs: false, limit: 2)
      {:ok, [%{"id" => "ann", "value" => 31}, %{"id" => "bob", "value" => 17.5}]}
      iex> Barrel.query(barrel, "$//age", ids, [])
      {:error, {:bad_query, ~S'empty segment in "$//age"'}}
  """
  @spec query(barrel(), path(), (doc(), acc -> fold_result(acc)), acc, query_opts()) ::
          {:ok, acc} | {:error, reason()}
        when acc: term()
  def query(barrel, path, fun, acc, opts \\ []) do
    with {:ok, opts} <- options(opts) do
      :barrel.query(barrel, path, fun, acc, Map.put_new(opts, :null, nil))
    end
  end

  @doc """
  The matching documents as a list, in the order of `query/5`.

  `query` is either the one-string form `"$/path/to/value"`, whose last
  segment is the value (`null`, `true`, `false`, a number, or else a
  string), or `{path, query_opts}` with the options of `query/5`. `opts`
  adds `:limit`, `:descending`, `:include_docs` and `:null`; with the
  one-string form, selection options are refused since the value is in the
  path.

      iex> :ok = Barrel.create_barrel("docs-find")
      iex> {:ok, barrel} = Barrel.open("docs-find")
      iex> {:ok, "acme", rev} = Barrel.save_doc(barrel, %{"id" => "acme", "headquarter" => "France"})
      iex> Barrel.find(barrel, "$/headquarter/france")
      {:ok, [%{"id" => "acme", "_rev" => rev, "headquarter" => "France"}]}
      iex> Barrel.find(barrel, {"$/headquarter", prefix: "FR"}, include_docs: false)
      {:ok, [%{"id" => "acme", "value" => "france"}]}
      iex> Barrel.find(barrel, "$/headquarter/spain")
      {:ok, []}
  """
  @spec find(barrel(), query(), query_opts()) :: {:ok, [doc()]} | {:error, reason()}
  def find(barrel, query, opts \\ [])

  def find(barrel, {path, query_opts}, opts) do
    # The null default goes with the query options so that one in opts wins.
    with {:ok, query_opts} <- options(query_opts),
         {:ok, opts} <- options(opts) do
      :barrel.find(barrel, {path, Map.put_new(query_opts, :null, nil)}, opts)
    end
  end

  def find(barrel, query, opts) do
    with {:ok, opts} <- options(opts) do
      :barrel.find(barrel, query, Map.put_new(opts, :null, nil))
    end
  end

  @doc """
  Rebuilds the path index of a barrel from its documents and returns the
  number of live documents indexed. Every write keeps the index up to date,
  so this is for recovery; queries running meanwhile may see a partial index.

      iex> :ok = Barrel.create_barrel("docs-reindex")
      iex> {:ok, barrel} = Barrel.open("docs-reindex")
      iex> {:ok, _results} = Barrel.save_docs(barrel, [%{"id" => "a", "n" => 1}, %{"id" => "b", "n" => 2}])
      iex> Barrel.reindex(barrel)
      {:ok, 2}
      iex> Barrel.find(barrel, "$/n/2", include_docs: false)
      {:ok, [%{"id" => "b", "value" => 2}]}
  """
  @spec reindex(barrel()) :: {:ok, non_neg_integer()} | {:error, reason()}
  def reindex(barrel), do: :barrel.reindex(barrel)

  ## Changes

  @doc """
  The changes after sequence `since`, in sequence order:
  `{:ok, changes, last_seq}`. A document appears once, at its latest change.
  `since` is `0` for the whole feed, a sequence already seen (such as a
  previous `last_seq`) for what came after it, or `:now` for nothing.

  `last_seq` is where to continue from: the barrel's latest sequence when
  the whole feed was read, else the sequence of the last change returned
  (with `descending: true`, always the latest sequence).

  Options:

    * `include_docs: true`: add `"doc"`, the winning revision (a tombstone,
      with `"_deleted" => true`, for a deletion).
    * `style: :all_docs`: `"changes"` lists every leaf revision, the winner
      first, conflicts and deleted branches included. The default,
      `:main_only`, lists the winner only.
    * `limit: n` (default `:infinity`): at most `n` changes.
    * `descending: true`: newest first.
    * `filter: pattern | [pattern]`: only documents whose current revision
      matches one of the patterns (see `t:pattern/0`; values match as in the
      path index, strings lowercased). `[]`, the default, keeps them all.
    * `null: atom` (default `nil`): what JSON `null` comes back as.

  Example:

      iex> :ok = Barrel.create_barrel("docs-changes")
      iex> {:ok, barrel} = Barrel.open("docs-changes")
      iex> {:ok, "a", rev1} = Barrel.save_doc(barrel, %{"id" => "a", "type" => "user"})
      iex> {:ok, "b", rev_b} = Barrel.save_doc(barrel, %{"id" => "b"})
      iex> {:ok, "a", rev2} = Barrel.save_doc(barrel, %{"id" => "a", "_rev" => rev1, "type" => "admin"})
      iex> Barrel.changes(barrel, 0)
      {:ok,
       [
         %{"id" => "b", "rev" => rev_b, "seq" => 2, "changes" => [rev_b]},
         %{"id" => "a", "rev" => rev2, "seq" => 3, "changes" => [rev2]}
       ], 3}
      iex> {:ok, [%{"doc" => %{"type" => "admin"}}], 3} = Barrel.changes(barrel, 2, include_docs: true)
      iex> {:ok, [%{"id" => "b"}], 2} = Barrel.changes(barrel, 0, limit: 1)
      iex> Barrel.changes(barrel, 0, filter: "/type/admin", descending: true)
      {:ok, [%{"id" => "a", "rev" => rev2, "seq" => 3, "changes" => [rev2]}], 3}
      iex> Barrel.changes(barrel, :now)
      {:ok, [], 3}
      iex> Barrel.changes(barrel, -1)
      {:error, {:bad_arg, :since}}
  """
  @spec changes(barrel(), seq() | :now, [changes_option()]) ::
          {:ok, [change()], seq()} | {:error, reason()}
  def changes(barrel, since, opts \\ []) do
    with {:ok, opts} <- options(opts) do
      :barrel.changes(barrel, since, Map.put_new(opts, :null, nil))
    end
  end

  @doc """
  Folds over the changes after sequence `since`, in the order and with the
  options of `changes/3`, over one snapshot: writes made meanwhile are not
  seen. `fun` and its returns are as for `fold_docs/4`. Returns
  `{:ok, acc, last_seq}`; after an early stop, `last_seq` is the sequence of
  the last change `fun` was given, so the next fold can start there.

      iex> :ok = Barrel.create_barrel("docs-fold-changes")
      iex> {:ok, barrel} = Barrel.open("docs-fold-changes")
      iex> {:ok, _results} = Barrel.save_docs(barrel, for(id <- ~w(a b c), do: %{"id" => id}))
      iex> Barrel.fold_changes(barrel, 0, fn change, ids -> {:ok, [change["id"] | ids]} end, [])
      {:ok, ["c", "b", "a"], 3}
      iex> Barrel.fold_changes(barrel, 0, fn change, _ -> {:stop, change["id"]} end, nil)
      {:ok, "a", 1}
      iex> Barrel.fold_changes(barrel, 1, fn change, ids -> {:ok, [change["id"] | ids]} end, [])
      {:ok, ["c", "b"], 3}
  """
  @spec fold_changes(
          barrel(),
          seq() | :now,
          (change(), acc -> fold_result(acc)),
          acc,
          [changes_option()]
        ) :: {:ok, acc, seq()} | {:error, reason()}
        when acc: term()
  def fold_changes(barrel, since, fun, acc, opts \\ []) do
    with {:ok, opts} <- options(opts) do
      :barrel.fold_changes(barrel, since, fun, acc, Map.put_new(opts, :null, nil))
    end
  end

  @stream_chunk 256

  @doc """
  The changes feed as a lazy stream of `t:change/0`, read with `changes/3`
  one chunk at a time from `since`, each chunk continuing at the previous
  one's `last_seq`. The stream ends at the first chunk shorter than
  `:chunk`.

  Each chunk reads its own snapshot: documents written while the stream runs
  are seen when it gets to their new sequence, so a document updated
  meanwhile can appear twice, and a stream that keeps up with the writers
  may not end.

  Options:

    * `since: seq | :now` (default `0`): where to start.
    * `chunk: n` (default `256`): changes read per call.
    * `:include_docs`, `:style`, `:filter`, `:null`: as for `changes/3`.
      `:limit` and `:descending` are refused: use `Stream.take/2`, or
      `changes/3` for the newest first.

  Errors are raised when the stream is run, as an `ErlangError` whose
  `original` is the reason `changes/3` would return, such as
  `{:bad_option, {:chunk, 0}}` or `:closed`.

      iex> :ok = Barrel.create_barrel("docs-changes-stream")
      iex> {:ok, barrel} = Barrel.open("docs-changes-stream")
      iex> {:ok, _results} = Barrel.save_docs(barrel, for(i <- 1..10, do: %{"id" => "doc-\#{i}"}))
      iex> Barrel.changes_stream(barrel, chunk: 3) |> Enum.map(& &1["seq"])
      [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
      iex> Barrel.changes_stream(barrel, since: 8) |> Enum.map(& &1["id"])
      ["doc-9", "doc-10"]
      iex> Barrel.changes_stream(barrel, chunk: 0) |> Enum.to_list()
      ** (ErlangError) Erlang error: {:bad_option, {:chunk, 0}}
  """
  @spec changes_stream(barrel(), [stream_option()]) :: Enumerable.t()
  def changes_stream(barrel, opts \\ []) do
    Stream.resource(
      fn -> stream_start(opts) end,
      &stream_next(barrel, &1),
      fn _state -> :ok end
    )
  end

  # Checks the options when the stream starts, and makes the first state.
  defp stream_start(opts) do
    case options(opts) do
      {:ok, %{chunk: chunk}} when not (is_integer(chunk) and chunk > 0) ->
        raise ErlangError, original: {:bad_option, {:chunk, chunk}}

      {:ok, %{limit: limit}} ->
        raise ErlangError, original: {:bad_option, {:limit, limit}}

      {:ok, %{descending: descending}} ->
        raise ErlangError, original: {:bad_option, {:descending, descending}}

      {:ok, opts} ->
        {since, opts} = Map.pop(opts, :since, 0)
        {chunk, opts} = Map.pop(opts, :chunk, @stream_chunk)
        {since, chunk, opts |> Map.put(:limit, chunk) |> Map.put_new(:null, nil)}

      {:error, reason} ->
        raise ErlangError, original: reason
    end
  end

  # The state is {since, chunk, opts} while there may be more, :done after a short chunk.
  defp stream_next(_barrel, :done), do: {:halt, :done}

  defp stream_next(barrel, {since, chunk, opts}) do
    case :barrel.changes(barrel, since, opts) do
      {:ok, changes, _last} when length(changes) < chunk -> {changes, :done}
      {:ok, changes, last} -> {changes, {last, chunk, opts}}
      {:error, reason} -> raise ErlangError, original: reason
    end
  end

  @doc """
  Starts a listener: a process that hears the changes of `barrel` (a handle
  or a name) matching `:subscribe_to`, and sends each one as
  `{:barrel_change, listener, change}` to a process or passes it to a
  function. Returns `{:ok, listener}`.

  The listener runs under the `:barrel` application's supervisor and stops
  with the calling process (its owner), with `stop_listener/1`, or when the
  barrel is deleted. To keep one in a supervision tree of your own, use
  `Barrel.Listener`.

  Options:

    * `subscribe_to: [pattern]` (default `["/*"]`, every document): see
      `t:pattern/0`. A change is heard when the new or the previous revision
      matches, so a listener also hears a document leave its patterns, and
      its deletion.
    * `to: pid` (default: the caller): who receives the messages.
    * `callback_fun: fun`: instead of messages, `fun.(change)` is called in
      the listener process; a crash is logged and the listener goes on.
    * `since: seq | :now` (default `:now`): first replay the matching changes
      of the feed after `seq`, then continue live, with nothing lost or
      repeated at the switch.
    * `:include_docs`, `:style`, `:null`: as for `changes/3`.
    * `max_queue: n` (default `1000`): when the `to` process has more
      messages queued, the listener stops sending and later catches up from
      the feed. `window: n` (default `1000`): at most `n` changes in flight
      from the engine to the listener. However slow the receiver, memory
      stays bounded.

  Example:

      iex> :ok = Barrel.create_barrel("docs-listener")
      iex> {:ok, barrel} = Barrel.open("docs-listener")
      iex> {:ok, "old", _} = Barrel.save_doc(barrel, %{"id" => "old"})
      iex> {:ok, listener} = Barrel.start_listener(barrel, since: 0, to: self())
      iex> {:ok, "new", _} = Barrel.save_doc(barrel, %{"id" => "new"})
      iex> for _ <- 1..2 do
      ...>   receive do
      ...>     {:barrel_change, ^listener, %{"id" => id, "seq" => seq}} -> {id, seq}
      ...>   end
      ...> end
      [{"old", 1}, {"new", 2}]
      iex> Barrel.stop_listener(listener)
      :ok
      iex> Barrel.start_listener(barrel, subscribe_to: [])
      {:error, {:bad_option, {:subscribe_to, []}}}
  """
  @spec start_listener(barrel() | name(), [listener_option()]) ::
          {:ok, pid()} | {:error, reason()}
  def start_listener(barrel, opts) do
    with {:ok, opts} <- options(opts) do
      :barrel.start_listener(barrel, Map.put_new(opts, :null, nil))
    end
  end

  @doc """
  Stops a listener, whether started by `start_listener/2` or by
  `Barrel.Listener`. Returns `{:error, :not_found}` if it is not running.

      iex> :ok = Barrel.create_barrel("docs-stop-listener")
      iex> {:ok, listener} = Barrel.start_listener("docs-stop-listener", [])
      iex> Barrel.stop_listener(listener)
      :ok
      iex> Barrel.stop_listener(listener)
      {:error, :not_found}
  """
  @spec stop_listener(pid()) :: :ok | {:error, :not_found}
  def stop_listener(listener), do: :barrel.stop_listener(listener)

  ## HTTP

  @doc """
  Starts the HTTP and WebSocket API over this node's barrels (see "HTTP" in
  the module documentation): `{:ok, http}`. The server runs under the
  `:barrel` application's supervisor, not tied to the calling process: it
  serves until `stop_http/1` or until the application stops. Several can run
  at once.

  Options:

    * `ip: address` (default `{127, 0, 0, 1}`): the address to listen on, a
      tuple (IPv4 or IPv6). An address that is not a loopback one requires
      `:basic_auth` or `:tokens`, else `{:error, {:bad_param, why}}`.
    * `port: n` (default `7080`): `0` picks a free port; `http_info/1` tells
      which.
    * `basic_auth: [{user, password}]`: credentials accepted with HTTP basic
      authentication.
    * `tokens: [token]`: accepted as `Authorization: Bearer token`. With
      `:basic_auth` or `:tokens`, a request without valid credentials gets
      401 (CORS preflights excepted).
    * `tls: {cert_file, key_file}`: PEM files; the server speaks https and
      wss. Files that cannot be loaded give `{:error, {:bad_param, why}}`.
    * `cors: :none | :any | [origin]` (default `:none`): the browser origins
      allowed to call the server.
    * `max_body: bytes` (default 64 MiB): larger request bodies get 413.
    * `max_attachment_size: bytes` (default 16 GiB): larger attachment
      uploads get 413 (they are streamed, and not bound by `max_body`).

  A port in use gives `{:error, {:storage_error, why}}`, and a stopped
  application `{:error, :closed}`. For a server reachable from other
  machines, over TLS and with a token:

      {:ok, http} =
        Barrel.start_http(
          ip: {0, 0, 0, 0},
          port: 7080,
          tokens: [System.fetch_env!("BARREL_TOKEN")],
          tls: {"/etc/barrel/cert.pem", "/etc/barrel/key.pem"}
        )

  Example:

      iex> {:ok, http} = Barrel.start_http(port: 0)
      iex> {:ok, %{ip: {127, 0, 0, 1}, port: port, url: url}} = Barrel.http_info(http)
      iex> url == "http://127.0.0.1:\#{port}"
      true
      iex> Barrel.stop_http(http)
      :ok
      iex> {:error, {:bad_param, _why}} = Barrel.start_http(ip: {0, 0, 0, 0}, port: 0)
      iex> Barrel.start_http(port: 70_000)
      {:error, {:bad_option, {:port, 70_000}}}
  """
  @spec start_http([http_option()]) :: {:ok, pid()} | {:error, reason()}
  def start_http(opts) do
    with {:ok, opts} <- options(opts), do: :barrel.start_http(opts)
  end

  @doc """
  Stops a server started by `start_http/1`: its port is closed, and requests
  still waiting (such as a longpoll on `_changes`) are ended. Returns
  `{:error, :not_found}` if it is not running.

      iex> {:ok, http} = Barrel.start_http(port: 0)
      iex> Barrel.stop_http(http)
      :ok
      iex> Barrel.stop_http(http)
      {:error, :not_found}
  """
  @spec stop_http(pid()) :: :ok | {:error, :not_found}
  def stop_http(http), do: :barrel.stop_http(http)

  @doc """
  Where a server started by `start_http/1` listens: its `:ip`, its `:port`
  (the one picked when started with `port: 0`) and its `:url`. Returns
  `{:error, :not_found}` if it is not running.

      iex> {:ok, http} = Barrel.start_http(port: 0)
      iex> {:ok, %{port: port, url: url}} = Barrel.http_info(http)
      iex> url == "http://127.0.0.1:\#{port}"
      true
      iex> :ok = Barrel.stop_http(http)
      iex> Barrel.http_info(http)
      {:error, :not_found}
  """
  @spec http_info(pid()) :: {:ok, http_info()} | {:error, :not_found}
  def http_info(http), do: :barrel.http_info(http)

  ## Replication

  @doc """
  Starts replicating `source` to `target` in the background (see
  "Replication" in the module documentation) and returns
  `{:ok, replication_id}` at once. Each side is a barrel name or a URL (see
  `t:endpoint/0`). Every revision missing on the target is copied, with its
  history; a replication between the same sides with the same filter starts
  after the last checkpoint of the previous one.

  Options:

    * `continuous: true`: once caught up, follow the source (state `:idle`)
      until `cancel_replication/1`. Errors, such as a side that cannot be
      reached, are then retried with a growing pause (state `:retrying`)
      instead of ending the replication (state `:failed`).
    * `sync: true`: replicate both ways at once, in two legs: `:push`
      (source to target) and `:pull` (target to source).
    * `filter: [pattern]` (default `[]`, every document): only the documents
      whose current revision on the source matches one of the patterns (see
      `t:pattern/0`).
    * `since: seq`: start after this source sequence instead of the
      checkpoint.
    * `batch_size: n` (default `500`): changes read, written and checkpointed
      at a time.
    * `to: pid`: receives `{:barrel_replication, replication_id, progress}`
      after each batch and change of state of a leg (see
      `t:replication_progress/0`); the last message of a leg that ends by
      itself has a final state. None comes after `cancel_replication/1`.
    * `persist: true`: remember the replication in the data directory and
      start it again with the application, until `cancel_replication/1`.
    * `create_target: false` (default `true`): do not create a missing
      target, a barrel of this node or a remote database over HTTP: a
      missing local one is then `{:error, :not_found}`, and a replication to
      a missing remote one fails.
    * `auth: {:basic, user, password} | {:bearer, token}`: credentials for
      the remote sides reached over HTTP.

  A missing local source is `{:error, :not_found}`; a side that is neither
  a name nor a URL `{:error, {:bad_endpoint, side}}`; a filter pattern that
  cannot be parsed `{:error, {:bad_param, why}}`. A remote target over HTTP
  is checked (and created) before `replicate/3` returns, so one that cannot
  be reached is `{:error, {:storage_error, why}}`, unless
  `create_target: false`. Otherwise a remote side that cannot be reached
  makes a one-shot replication fail, with the reason in `:last_error`, and
  a continuous one retry.

  Example:

      iex> :ok = Barrel.create_barrel("docs-replicate")
      iex> {:ok, barrel} = Barrel.open("docs-replicate")
      iex> {:ok, _results} =
      ...>   Barrel.save_docs(barrel, [%{"id" => "ann", "type" => "user"}, %{"id" => "o1", "type" => "order"}])
      iex> {:ok, rep} =
      ...>   Barrel.replicate("docs-replicate", "docs-replicate-users", filter: ["/type/user"], to: self())
      iex> receive do
      ...>   {:barrel_replication, ^rep, %{state: :completed} = progress} -> Map.take(progress, [:leg, :docs_written])
      ...> after
      ...>   5000 -> :timeout
      ...> end
      %{leg: :push, docs_written: 1}
      iex> {:ok, users} = Barrel.open("docs-replicate-users")
      iex> {:ok, [%{"id" => "ann"}], _last_seq} = Barrel.changes(users, 0)
      iex> Barrel.replicate("docs-replicate", "docs-nope", create_target: false)
      {:error, :not_found}
      iex> Barrel.replicate("docs-replicate", :elsewhere)
      {:error, {:bad_endpoint, :elsewhere}}
      iex> Barrel.replicate("docs-replicate", "docs-replicate-users", batch_size: 0)
      {:error, {:bad_option, {:batch_size, 0}}}

  A continuous replication both ways with a barrel on another machine, until
  it is cancelled:

      {:ok, rep} =
        Barrel.replicate("users", "https://db.example.com/barrels/users",
          continuous: true,
          sync: true,
          auth: {:bearer, System.fetch_env!("BARREL_TOKEN")}
        )

      :ok = Barrel.cancel_replication(rep)
  """
  @spec replicate(endpoint(), endpoint(), [replication_option()]) ::
          {:ok, replication_id()} | {:error, reason()}
  def replicate(source, target, opts \\ []) do
    with {:ok, opts} <- options(opts) do
      :barrel.replicate(%{"source" => source, "target" => target}, opts)
    end
  end

  @doc """
  How a replication is going, or how it ended (see
  `t:replication_info/0`). A replication is known from `replicate/3` until
  the application stops, whether it runs or not. Returns
  `{:error, :not_found}` for an unknown id.

      iex> :ok = Barrel.create_barrel("docs-replication-info")
      iex> {:ok, barrel} = Barrel.open("docs-replication-info")
      iex> {:ok, _results} = Barrel.save_docs(barrel, [%{"id" => "a"}, %{"id" => "b"}])
      iex> {:ok, rep} = Barrel.replicate("docs-replication-info", "docs-replication-info-copy", to: self())
      iex> receive do
      ...>   {:barrel_replication, ^rep, %{state: :completed}} -> :ok
      ...> after
      ...>   5000 -> :timeout
      ...> end
      :ok
      iex> {:ok, info} = Barrel.replication_info(rep)
      iex> Map.take(info, [:state, :source, :target, :docs_read, :docs_written, :errors])
      %{
        state: :completed,
        source: "docs-replication-info",
        target: "docs-replication-info-copy",
        docs_read: 2,
        docs_written: 2,
        errors: 0
      }
      iex> Barrel.replication_info("rep-unknown")
      {:error, :not_found}
  """
  @spec replication_info(replication_id()) :: {:ok, replication_info()} | {:error, :not_found}
  def replication_info(replication_id), do: :barrel.replication_info(replication_id)

  @doc """
  Stops a replication, and forgets it if it was started with
  `persist: true`. It returns once the replication has stopped, in state
  `:cancelled`. Cancelling a replication that has already ended returns
  `:ok` and changes nothing, except that a persistent one is forgotten.
  Returns `{:error, :not_found}` for an unknown id.

  A replication stops between batches, and a continuous one waiting for
  changes may take up to five seconds to notice.

      iex> :ok = Barrel.create_barrel("docs-cancel-replication")
      iex> {:ok, rep} = Barrel.replicate("docs-cancel-replication", "docs-cancel-replication-copy", to: self())
      iex> receive do
      ...>   {:barrel_replication, ^rep, %{state: :completed}} -> :ok
      ...> after
      ...>   5000 -> :timeout
      ...> end
      :ok
      iex> Barrel.cancel_replication(rep)
      :ok
      iex> Barrel.cancel_replication("rep-unknown")
      {:error, :not_found}
  """
  @spec cancel_replication(replication_id()) :: :ok | {:error, :not_found}
  def cancel_replication(replication_id), do: :barrel.cancel_replication(replication_id)

  # Options come as a keyword list; :barrel takes a map. A repeated key keeps
  # its first value, as Keyword.get/2 reads it. Barrel.Listener uses it too.
  @doc false
  def options(opts) do
    if Keyword.keyword?(opts), do: {:ok, to_map(opts)}, else: {:error, {:bad_option, opts}}
  end

  defp to_map(keyword), do: keyword |> Enum.reverse() |> Map.new()
end
