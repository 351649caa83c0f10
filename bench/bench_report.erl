%% @doc The benchmark's output: the machine, the table printed at the end of a run, and
%% `bench/RESULTS.md' (every figure, the ratios of Barrel to each peer, and the targets of
%% issue 3 checked against them).
-module(bench_report).

-export([machine/0, table/1, markdown/1, throughput/2, rate/1, us/1, bytes/1,
         workload_label/1, round_workloads/0]).

%% Workloads shorter than this (seconds) have no CPU row: thread times come in 10 ms ticks.
-define(CPU_MIN_SECS, 0.5).

%% ---------------------------------------------------------------------------
%% Targets: `num' / `den' (throughputs, docs/s) must be at least `min'. With `rounds', the
%% driver measures both workloads again after the main run (see `barrel_bench:rounds/5') and
%% the target is checked on the median of the ratios: on a shared VM the same work runs up to
%% a third faster or slower from one minute to the next, so one pair of figures taken minutes
%% apart can miss or meet a close target by chance.
%% ---------------------------------------------------------------------------

targets() ->
    [#{title => "save_doc, 1 process ≥ 2× Mnesia disc_copies transactions",
       num => {barrel, save_doc_1}, den => {mnesia_tx, save_doc_1}, min => 2.0, rounds => true},
     #{title => "save_doc, 1 process ≥ 0.5× raw RocksDB puts",
       num => {barrel, save_doc_1}, den => {rocksdb, save_doc_1}, min => 0.5},
     #{title => "save_doc, 16 processes ≥ 1.6× save_doc, 1 process",
       num => {barrel, save_doc_16}, den => {barrel, save_doc_1}, min => 1.6},
     #{title => "save_docs, batches of 1000 ≥ 1× raw RocksDB single puts",
       num => {barrel, save_docs_1000}, den => {rocksdb, save_doc_1}, min => 1.0},
     #{title => "fetch_doc random, 1 process ≥ 0.5× Mnesia dirty_read",
       num => {barrel, fetch_random_1}, den => {mnesia_dirty, fetch_random_1}, min => 0.5,
       rounds => true},
     #{title => "fetch_doc sequential, 1 process ≥ 0.5× Mnesia dirty_read",
       num => {barrel, fetch_seq_1}, den => {mnesia_dirty, fetch_seq_1}, min => 0.5,
       rounds => true},
     #{title => "Listener latency p99 below 1 ms at 10k writes/s",
       p99 => {barrel, changes_latency}, max_us => 1000, rate => 10000},
     #{title => "Replication ≥ 10× PouchDB-to-PouchDB docs/s for the same 100k docs",
       num => {barrel, replicate_local}, den => {pouchdb, replicate_local}, min => 10.0}].

%% Targets of issue 3 the harness cannot measure yet (listed under the targets table).
later_targets() ->
    [].

%% @doc What the targets with `rounds' compare, each as the two `{Peer, Workload}' it divides;
%% the driver measures them again after the main run.
-spec round_workloads() -> [{{atom(), term()}, {atom(), term()}}].
round_workloads() ->
    [{Num, Den} || #{num := Num, den := Den, rounds := true} <- targets()].

%% ---------------------------------------------------------------------------
%% Machine
%% ---------------------------------------------------------------------------

%% @doc What the figures were measured on.
machine() ->
    CpuInfo = read("/proc/cpuinfo"),
    Cpu = case re:run(CpuInfo, "model name\\s*:\\s*(.*)", [{capture, all_but_first, binary}]) of
              {match, [M]} -> M;
              nomatch -> <<"unknown">>
          end,
    Mem = case re:run(read("/proc/meminfo"), "MemTotal:\\s*(\\d+)",
                      [{capture, all_but_first, binary}]) of
              {match, [K]} -> binary_to_integer(K) * 1024;
              nomatch -> 0
          end,
    Os = case re:run(read("/etc/os-release"), "PRETTY_NAME=\"?([^\"\\n]*)",
                     [{capture, all_but_first, binary}]) of
             {match, [O]} -> O;
             nomatch -> <<"unknown">>
         end,
    #{date => list_to_binary(calendar:system_time_to_rfc3339(erlang:system_time(second),
                                                             [{offset, "Z"}])),
      cpu => Cpu,
      cores => erlang:system_info(logical_processors_available),
      ram => Mem,
      os => iolist_to_binary([Os, ", Linux ", cmd("uname -r")]),
      otp => iolist_to_binary(["OTP ", erlang:system_info(otp_release), " (erts ",
                               erlang:system_info(version), ")"]),
      rust => cmd("rustc --version"),
      node => cmd("node --version"),
      rocksdb => rocksdb_version(),
      http_client => <<"Barrel HTTP client: ureq ", (crate_version("ureq"))/binary>>,
      pouchdb => pouchdb_version(),
      commit => iolist_to_binary([cmd("git rev-parse --short HEAD"),
                                  case cmd("git status --porcelain -- native src lib") of
                                      <<>> -> <<>>;
                                      _ -> <<" with uncommitted engine changes">>
                                  end]),
      load => lists:sublist(string:lexemes(read("/proc/loadavg"), " "), 3)}.

read(File) ->
    case file:read_file(File) of
        {ok, B} -> B;
        {error, _} -> <<>>
    end.

cmd(Cmd) ->
    string:trim(list_to_binary(os:cmd(Cmd ++ " 2>/dev/null"))).

rocksdb_version() ->
    <<"rocksdb crate ", (crate_version("rocksdb"))/binary, ", librocksdb-sys ",
      (crate_version("librocksdb-sys"))/binary>>.

%% The version of a crate in Cargo.lock (the first one listed, when there are several).
crate_version(Name) ->
    case re:run(read("Cargo.lock"), "name = \"" ++ Name ++ "\"\\nversion = \"([^\"]+)\"",
                [{capture, all_but_first, binary}]) of
        {match, [X]} -> X;
        nomatch -> <<"?">>
    end.

pouchdb_version() ->
    case re:run(read("bench/node_modules/pouchdb-node/package.json"),
                "\"version\":\\s*\"([^\"]+)\"", [{capture, all_but_first, binary}]) of
        {match, [V]} -> <<"pouchdb-node ", V/binary, " (leveldb adapter)">>;
        nomatch -> <<"pouchdb-node (not installed)">>
    end.

%% ---------------------------------------------------------------------------
%% Tables
%% ---------------------------------------------------------------------------

%% @doc The table printed at the end of a run: docs/s (bytes for disk rows) of every peer, with
%% Barrel's ratio to it.
table(Report) ->
    markdown_table(summary(Report)).

summary(#{peers := Peers} = Report) ->
    Header = ["Workload" | [name(P) || P <- Peers]],
    Rows = [[Label ++ unit(Kind) | [cell(Kind, Id, P, Report) || P <- Peers]]
            || {Label, Kind, Id} <- rows(Report)],
    [Header | Rows].

%% Main rows, then the scale rows of each size. A row's kind: `rate' (docs/s), `{rate, Unit,
%% PerItem}' (a workload with a `unit') or a size.
rows(#{workloads := Ws, config := #{sizes := Sizes}}) ->
    Main = [{Title, rate_kind(W), Id} || W = #{id := Id, title := Title, main := true} <- Ws],
    Scale = lists:append(
              [[{"scale " ++ count_label(N) ++ ": " ++ Label, Kind, Id}
                || {Metric, Label, Kind} <- [{load, "load (save_docs 1000)", rate},
                                             {disk, "disk size", bytes},
                                             {disk, "of which write-ahead logs", log_bytes},
                                             {fetch, "fetch_doc random", rate}],
                   #{id := Id, scale := {SN, M}} <- Ws, SN =:= N, M =:= Metric]
               || N <- Sizes]),
    Main ++ Scale.

rate_kind(#{unit := Unit, per_item := PerItem}) -> {rate, Unit, PerItem};
rate_kind(_W) -> rate.

unit(rate) -> " (docs/s)";
unit({rate, Unit, _PerItem}) -> " (" ++ Unit ++ ")";
unit(_Bytes) -> "".

%% @doc A workload's result as a rate with its unit: `45.2k docs/s', `412 MiB/s'.
-spec throughput(map(), map()) -> string().
throughput(W, Stats) ->
    case rate_kind(W) of
        rate -> rate(value(rate, Stats)) ++ " docs/s";
        Kind = {rate, Unit, _} -> amount(value(Kind, Stats)) ++ " " ++ Unit
    end.

cell(Kind, Id, #{id := PeerId}, #{results := Results}) ->
    case {maps:get({PeerId, Id}, Results, missing), maps:get({barrel, Id}, Results, missing)} of
        {missing, _} -> "—";
        {{skipped, _}, _} -> "skipped";
        {{unsupported, _}, _} -> "n/a";
        {{error, _}, _} -> "error";
        {{ok, R}, B} ->
            Value = value(Kind, R),
            Text = format(Kind, Value),
            case {PeerId, B} of
                {barrel, _} -> Text;
                {_, {ok, BR}} when Value > 0 ->
                    Text ++ " (" ++ ratio(value(Kind, BR) / Value) ++ ")";
                _ -> Text
            end
    end.

value(rate, #{ops := Ops, secs := Secs}) -> Ops / max(Secs, 1.0e-9);
value({rate, _Unit, PerItem}, R) -> value(rate, R) * PerItem;
value(bytes, #{bytes := B}) -> B;
value(log_bytes, #{log_bytes := B}) -> B.

format(rate, V) -> rate(V);
format({rate, _Unit, _PerItem}, V) -> amount(V);
format(_Bytes, V) -> bytes(V).

ratio(X) -> [$× | float_to_list(X, [{decimals, ratio_decimals(X)}])].

%% Decimals a ratio is shown with: one from ×10 up, else two.
ratio_decimals(X) when X >= 10 -> 1;
ratio_decimals(_) -> 2.

%% A ratio set against a target's bound `Min': with more decimals when the usual ones would
%% round a miss up to the bound (0.497 is "×0.497", not "×0.50" beside "missed").
target_ratio(X, Min) ->
    target_ratio(X, Min, ratio_decimals(X)).

target_ratio(X, Min, Decimals) ->
    Text = float_to_list(X, [{decimals, Decimals}]),
    case X < Min andalso list_to_float(Text) >= Min andalso Decimals < 6 of
        true -> target_ratio(X, Min, Decimals + 1);
        false -> [$× | Text]
    end.

markdown_table([Header | Rows]) ->
    Widths = [lists:max([string:length(lists:nth(I, R)) || R <- [Header | Rows]])
              || I <- lists:seq(1, length(Header))],
    Line = fun(Cells) ->
                   ["|", [[" ", string:pad(C, W), " |"] || {C, W} <- lists:zip(Cells, Widths)],
                    "\n"]
           end,
    [Line(Header),
     "|", [[lists:duplicate(W + 2, $-), "|"] || W <- Widths], "\n",
     [Line(R) || R <- Rows]].

name(#{name := N}) -> N.

%% ---------------------------------------------------------------------------
%% RESULTS.md
%% ---------------------------------------------------------------------------

%% @doc The whole report as Markdown.
markdown(#{machine := M, config := C, peers := Peers, workloads := Ws, results := Results,
           secs := Secs} = Report) ->
    Rounds = maps:get(rounds, Report, []),
    Mode = case C of
               #{quick := true} -> "quick (BENCH_QUICK=1: small counts, not comparable)";
               #{full := true} -> "full (BENCH_FULL=1)";
               _ -> "default"
           end,
    [<<"# Barrel benchmark results\n\n">>,
     <<"Written by `make bench` (bench/README.md explains the workloads). Every figure below was "
       "measured in one run on this machine, the peers one after the other; a ratio is Barrel's "
       "figure divided by the peer's (above 1: Barrel is faster; for disk size, above 1: Barrel "
       "uses more).\n\n">>,
     "## Machine\n\n",
     io_lib:format("- Date: ~ts (run took ~b s, ~ts mode)~n", [maps:get(date, M), Secs, Mode]),
     io_lib:format("- CPU: ~ts, ~b cores available; RAM ~ts~n",
                   [maps:get(cpu, M), maps:get(cores, M), bytes(maps:get(ram, M))]),
     io_lib:format("- OS: ~ts~n", [maps:get(os, M)]),
     io_lib:format("- ~ts; ~ts; Node ~ts~n",
                   [maps:get(otp, M), maps:get(rust, M), maps:get(node, M)]),
     io_lib:format("- Peers: ~ts; ~ts; ~ts; Mnesia and DETS from OTP~n",
                   [maps:get(rocksdb, M), maps:get(http_client, M), maps:get(pouchdb, M)]),
     io_lib:format("- Barrel at commit ~ts~n", [maps:get(commit, M)]),
     io_lib:format("- Load average at start: ~ts~n~n", [lists:join(" ", maps:get(load, M))]),
     "## Throughput\n\n",
     "Documents per second, or what the row names (attachment rows: MiB/s; disk rows: bytes "
     "on disk once the store is closed). In parentheses, Barrel's ratio to that peer.\n\n",
     table(Report), "\n",
     "## Latency\n\n",
     "Per call, p50 / p99 (a call is one document, or one batch for save_docs and the loads; "
     "for the attachment rows, one attachment).\n\n",
     markdown_table(latency(Report)), "\n",
     "## Where Barrel's CPU went\n\n",
     "CPU time of the VM's threads during each Barrel workload, by thread (from /proc), in µs "
     "per item (a document; a call for the query rows, an attachment for the attachment rows), "
     "and the cores that kept busy on average (2 is all of them here). Schedulers run the "
     "calls themselves: the workload's processes, and the NIFs that answer on them (converting "
     "documents, and a write committed on the caller's thread when the store is idle); the "
     "writer commits the rest, the indexer writes the path index, flushes and compactions are "
     "RocksDB's background threads, `ended` threads that ended during the workload (a "
     "replication's own). The changes and replication rows cover the whole "
     "workload, their setup included. The threads' times count in clock ticks (10 ms), so "
     "workloads shorter than half a second are left out.\n\n",
     markdown_table(cpu_rows(Report)), "\n",
     "## Targets (issue 3)\n\n",
     case Rounds of
         [] -> [];
         _ -> io_lib:format(
                "Targets marked *median* were measured ~b times: in the main run, then in ~b "
                "more rounds after it, each a fresh store of both peers, Barrel first in one "
                "round and last in the next. Their status is that of the median ratio; the "
                "ratio of every round is listed. The main run's figures are those of the "
                "tables above.~n~n", [length(Rounds) + 1, length(Rounds)])
     end,
     markdown_table(target_rows(Results, Rounds)), "\n",
     tail_notes(Results),
     case later_targets() of
         [] -> [];
         Later -> [[["- Not measured yet: ", T, "\n"] || T <- Later], "\n"]
     end,
     "## Workloads\n\n",
     markdown_table([["Workload", "Store", "Docs", "Processes", "Batch"]
                     | [[workload_label(Id), store_label(S), integer_to_list(N),
                         integer_to_list(P), integer_to_list(B)]
                        || #{id := Id, store := S, count := N, procs := P, batch := B} <- Ws]]),
     "\n",
     io_lib:format("Each workload stops after ~b s (loads: ~b s, replications: ~b s); a peer "
                   "that is cut short reports the documents it did in that time, and a store "
                   "whose load was cut short skips its other workloads. Before each workload "
                   "the driver waits, untimed, until the peer's store is at rest, so no "
                   "workload pays for the background work of the ones before it: Barrel until "
                   "`barrel:store_info()` says `idle` (path index written, no RocksDB flush or "
                   "compaction running or due), the Barrel HTTP peer the same through the "
                   "engine, raw RocksDB until no flush or compaction is running or due, Mnesia "
                   "`mnesia:dump_log()`, DETS `dets:sync/1`; PouchDB (leveldown) has no way to "
                   "wait for its compactions. A workload's own background work after its last "
                   "call is not in its figure (loads run long enough to include theirs).~n~n",
                   [maps:get(deadline_ms, C) div 1000, maps:get(load_deadline_ms, C) div 1000,
                    maps:get(rep_deadline_ms, C) div 1000]),
     "## Notes\n\n", notes(Peers, Ws, Results)].

latency(#{peers := Peers, results := Results} = Report) ->
    Header = ["Workload" | [name(P) || P <- Peers]],
    Rows = [[Label | [lat_cell(maps:get({PeerId, Id}, Results, missing))
                      || #{id := PeerId} <- Peers]]
            || {Label, Kind, Id} <- rows(Report), is_rate(Kind), has_latency(Id, Results)],
    [Header | Rows].

%% Barrel's workloads with CPU figures, in the order of the tables above.
cpu_rows(#{results := Results} = Report) ->
    Groups = [schedulers, dirty_cpu, dirty_io, writer, indexer, notifier, flushes, compactions,
              other, ended],
    Header = ["Workload", "Rate", "Cores busy", "CPU µs/item"
              | [atom_to_list(G) || G <- Groups]],
    Ids = lists:foldl(fun({_, Kind, Id}, Acc) ->
                              case is_rate(Kind) andalso not lists:member(Id, Acc) of
                                  true -> Acc ++ [Id];
                                  false -> Acc
                              end
                      end, [], rows(Report)),
    Rows = [[workload_label(Id), amount(Ops / Secs),
             float_to_list(Total / Secs, [{decimals, 2}]), per_item(Total, Ops)
             | [per_item(maps:get(G, Cpu, 0.0), Ops) || G <- Groups]]
            || Id <- Ids,
               {ok, #{cpu := Cpu, ops := Ops, secs := Secs}} <- [maps:get({barrel, Id}, Results,
                                                                          missing)],
               Ops > 0, Secs >= ?CPU_MIN_SECS,
               Total <- [lists:sum(maps:values(Cpu))]],
    [Header | Rows].

per_item(Secs, Ops) ->
    Us = Secs * 1.0e6 / Ops,
    if Us >= 100 -> integer_to_list(round(Us));
       true -> float_to_list(Us, [{decimals, 1}])
    end.

is_rate(rate) -> true;
is_rate({rate, _, _}) -> true;
is_rate(_Bytes) -> false.

has_latency(Id, Results) ->
    lists:any(fun({{_, I}, {ok, #{p50_us := P}}}) -> I =:= Id andalso P =/= undefined;
                 (_) -> false
              end, maps:to_list(Results)).

lat_cell({ok, #{p50_us := P50, p99_us := P99}}) when P50 =/= undefined ->
    us(P50) ++ " / " ++ us(P99);
lat_cell(_) -> "—".

target_rows(Results, Rounds) ->
    [["Target", "Measured", "Status"]
     | [begin
            {Measured, Status} = check(T, Results, Rounds),
            [Title, Measured, Status]
        end || T = #{title := Title} <- targets()]].

check(#{p99 := Key, max_us := Max, rate := Rate}, Results, _Rounds) ->
    case maps:get(Key, Results, missing) of
        {ok, #{p99_us := P99, p50_us := P50} = R} when P99 =/= undefined ->
            %% The offered rate is only a target if the writes kept up with it.
            Achieved = value(rate, R),
            {io_lib:format("p99 ~ts (p50 ~ts) at ~ts writes/s", [us(P99), us(P50), rate(Achieved)]),
             status(P99 < Max andalso Achieved >= 0.95 * Rate)};
        _ ->
            {"—", "not measured"}
    end;
check(T = #{num := Num, den := Den, min := Min}, Results, Rounds0) ->
    Rounds = case T of
                 #{rounds := true} -> Rounds0;
                 _ -> []
             end,
    case pair(Num, Den, Results) of
        {X, Y} ->
            Main = X / max(Y, 1.0e-9),
            Ratios = [A / max(B, 1.0e-9) || R <- Rounds, {A, B} <- [pair(Num, Den, R)]],
            case Ratios of
                [] ->
                    {io_lib:format("~ts (~ts vs ~ts docs/s)",
                                   [target_ratio(Main, Min), rate(X), rate(Y)]),
                     status(Main >= Min)};
                _ ->
                    All = [Main | Ratios],
                    Median = median(All),
                    {io_lib:format("~ts *median* of ~b (~ts; main run ~ts vs ~ts docs/s)",
                                   [target_ratio(Median, Min), length(All),
                                    lists:join(", ", [target_ratio(A, Min) || A <- All]),
                                    rate(X), rate(Y)]),
                     status(Median >= Min)}
            end;
        missing ->
            {"—", "not measured"}
    end.

%% The throughputs of two workloads in one set of results, if both ran.
pair(Num, Den, Results) ->
    case {maps:get(Num, Results, missing), maps:get(Den, Results, missing)} of
        {{ok, #{ops := _} = A}, {ok, #{ops := _} = B}} -> {value(rate, A), value(rate, B)};
        _ -> missing
    end.

status(true) -> "met";
status(false) -> "**missed**".

%% For Barrel's write → listener workloads: how many of the slowest deliveries overlapped a
%% RocksDB flush or compaction, and the p99 of those that overlapped neither (see
%% `bench_barrel:explain/2').
tail_notes(Results) ->
    Lines = [io_lib:format(
               "- ~ts: of the ~b deliveries at or above the p99 (~ts), ~b overlapped a RocksDB "
               "flush (~ts during the workload, ~b ms in all) and ~b a compaction (~ts, ~b ms); "
               "the ~b of ~b deliveries that overlapped neither had a p99 of ~ts.~n",
               [workload_label(Id), Slow, us(P99), SF, counted(NF, "flush", "flushes"),
                round(FMs), SC, counted(NC, "compaction", "compactions"), round(CMs), Quiet, N,
                us(QuietP99)])
             || Id <- [changes_latency, changes_latency_flat],
                {ok, #{p99_us := P99,
                       tail := #{slow := Slow, deliveries := N, quiet := Quiet,
                                 p99_outside_us := QuietP99,
                                 flush := #{count := NF, ms := FMs, slow := SF},
                                 compaction := #{count := NC, ms := CMs, slow := SC}}}}
                    <- [maps:get({barrel, Id}, Results, missing)]],
    case Lines of
        [] -> [];
        _ -> ["Where the listener's slowest deliveries came from (Barrel; flushes and "
              "compactions from the `EVENT_LOG_v1` lines RocksDB writes to its `LOG` files as "
              "they start and finish, matched against each delivery's way from its write call "
              "to its listener):\n\n", Lines, "\n"]
    end.

counted(1, One, _Many) -> "1 " ++ One;
counted(N, _One, Many) -> integer_to_list(N) ++ " " ++ Many.

%% The middle value (the mean of the two middle ones for an even count).
median(Xs) ->
    Sorted = lists:sort(Xs),
    N = length(Sorted),
    case N rem 2 of
        1 -> lists:nth(N div 2 + 1, Sorted);
        0 -> (lists:nth(N div 2, Sorted) + lists:nth(N div 2 + 1, Sorted)) / 2
    end.

notes(Peers, Ws, Results) ->
    Fixed =
        ["- Documents: 1 KB JSON objects of 22 fields (strings, numbers, booleans, null, "
         "nested objects and lists), from 1000 templates with `id` and `seq` set per document; "
         "ids are `<keyspace>-<10 digits>`, written in id order. Barrel, Mnesia and DETS store "
         "the Erlang map, RocksDB the JSON bytes (key: the id), PouchDB the parsed object; "
         "Barrel HTTP sends the JSON bytes as request bodies.\n",
         "- Barrel: the public `barrel` API (`save_doc`, `save_docs`, `save_doc` with `_rev`, "
         "`fetch_doc`, `fold_docs`), default barrel settings (`sync => false`).\n",
         "- Barrel HTTP: `bench/http_peer`, the same engine and barrel settings behind Barrel's "
         "own HTTP server (`barrel_core::server`, as `barrel:start_http/1` and `barreld` run it: "
         "plain HTTP on 127.0.0.1, no authentication), called from client threads in the same "
         "process, one keep-alive connection (`ureq`) each. A call is one request, timed until "
         "its response is read: `PUT /barrels/bench/docs/<id>`, `POST _bulk_docs` for a batch, "
         "`PUT` with `?rev=` for an update (revisions read before the clock), "
         "`GET /barrels/bench/docs/<id>` (body read, not decoded), `_all_docs` with "
         "`include_docs` in pages of 1000 for the fold. Its ratio is Barrel's embedded API over "
         "the same engine through HTTP; client and server share the machine's cores.\n",
         "- Mnesia tx: one `disc_copies` table, each call one transaction (`write`; `wread` then "
         "`write` for an update; `read`; `foldl`). Mnesia dirty: `dirty_write`, `dirty_read`, "
         "`foldl` in `async_dirty`; a batch is a loop of dirty writes. Mnesia's defaults (the "
         "log is dumped every 1000 writes). Its fold is not in key order (a `set`).\n",
         "- DETS: one `set` file, `insert` (a list for a batch), `lookup`, `foldl`.\n",
         "- RocksDB: `bench/rocksdb_floor`, the `rocksdb` crate with its default options "
         "(WAL on, no fsync), `put`, a `WriteBatch` for a batch, `get`, a full iterator for the "
         "fold; concurrent processes are threads. No JSON decoding: the floor.\n",
         "- PouchDB: `pouchdb-node` (leveldb adapter) in one Node process: `put`, `bulkDocs`, "
         "`put` with `_rev`, `get`, `allDocs` with `include_docs` in pages of 1000; "
         "\"processes\" are concurrent async callers on Node's single thread.\n",
         "- Changes (Barrel and Mnesia): `changes_latency`: 4 writer processes together offer "
         "10k `save_doc` a second (Mnesia: transactions or dirty writes), each document "
         "carrying the time its write call started; one listener process records, per change "
         "received, the time since then (write call to message, commit included; the latency "
         "table has p50 / p99). `changes_latency_flat` does the same with the documents of "
         "`save_doc_flat_1` (one indexed value), which leaves the write path far from saturated. "
         "`changes_fanout_N`: N listener processes, one writer storing documents in batches "
         "of 100 as fast as it can; the figure is changes delivered a second (N × documents), "
         "from the first write until the last listener has them all, so with 1 listener it is "
         "bounded by the write rate. Barrel: `barrel:start_listener/2` with `to` (and "
         "`include_docs` for the latency); Mnesia: `mnesia:subscribe({table, T, simple})` in the "
         "listening process. PouchDB (latency only): `put` from concurrent async writers paced "
         "the same way, heard by a live `db.changes({since: 'now', include_docs: true})` feed "
         "in the same Node process. DETS, RocksDB and Barrel HTTP have no listener in this "
         "harness.\n",
         "- Replication (Barrel and PouchDB; issue 7): one-shot replications of every "
         "document of the 100k scale store, each into a new, empty database; the figure is "
         "documents written a second, from the call until the replication has completed. The "
         "documents are the standard 1 KB ones of every other workload (the issue says "
         "\"small docs\"), so the figures compare. They run once that store's disk size is "
         "measured, in the store closed and opened again (its caches cold), so the copies "
         "stay out of the 100k disk size. Barrel: "
         "`barrel:replicate/2` (default `batch_size`: 500) with `to`, timed until its "
         "`completed` message, into a barrel of the same store: `replicate_local` directly, "
         "inside the engine; `replicate_ws` and `replicate_http` through the HTTP server "
         "started in the same VM (`barrel:start_http/1`, 127.0.0.1), over its WebSocket "
         "stream and over the CouchDB replication protocol (`_revs_diff`, `_bulk_get`, "
         "`_bulk_docs`), the replicator and the server sharing the VM's cores. PouchDB: "
         "`PouchDB.replicate` with its defaults (batches of 100) from the loaded leveldb "
         "database to a new one in the same Node process. PouchDB has no WebSocket "
         "replication, and PouchDB to PouchDB over HTTP needs a PouchDB server, which this "
         "harness does not run: `n/a`.\n",
         "- Continuous replication lag (Barrel only): `replication_lag_local`, `_ws`, `_http`: "
         "a continuous replication (`continuous => true`) from a new, empty barrel to another, "
         "directly or through the HTTP server in the same VM as above; 2 writer processes "
         "offer 5k `save_doc` a second to the source, each document carrying the time its "
         "write call started, and a listener on the target records the time until it hears the "
         "change (source commit, replication, target commit and notification; p50 / p99 in "
         "the latency table). The figure is changes heard on the target a second. PouchDB "
         "(`_local` only): `PouchDB.replicate(source, target, {live: true})` between two new "
         "leveldb databases, writes paced as above, changes heard on a live feed of the "
         "target.\n",
         "- Path-index queries (Barrel only) over the largest default store (1M documents): "
         "`barrel:find/3` around a random stored document `s-I`: `query_eq` `$/id` equal to "
         "its id (1 row; `query_eq_docs` with the document), `query_prefix` `$/id` with the "
         "id's prefix but its last digit (10 rows), `query_range` `$/seq` from I to I + 99 "
         "(100 rows, `include_docs => false`; `query_range_docs` with the documents). The "
         "figure is queries a second, each checked for its row count.\n",
         "- Attachments (Barrel, Barrel HTTP, RocksDB, PouchDB): `att_put_1m` writes "
         "new documents with one 1 MiB attachment each, `att_get_1m` reads them back whole, "
         "`att_put_64k` writes 64 KiB ones from 16 processes; the figure is MiB of attachment "
         "content a second. The content is pseudo-random (ChaCha20 keyed by the document id, "
         "generated before the clock): the same bytes in every peer, incompressible, and "
         "different for every document, so nothing is deduplicated. Barrel: "
         "`barrel:put_attachment/6` (no `rev`: a new document) and "
         "`barrel:fetch_attachment/3`. Barrel HTTP: `PUT /barrels/bench/docs/<id>/blob` with "
         "the raw bytes as the body (`application/octet-stream`), `GET` of the same path "
         "(body read, length checked). RocksDB: one `put` / `get` of the bytes under the "
         "document's key, the floor. PouchDB: `putAttachment` / `getAttachment` with a "
         "Buffer. Mnesia and DETS have no attachments (`n/a`).\n",
         "- Disk size: bytes of every file in the peer's directory once the store is closed "
         "after its workloads (what is left on disk at rest); the next row counts the part in "
         "write-ahead logs (`*.log` of RocksDB and LevelDB, Mnesia's `LATEST.LOG`).\n",
         "- Mnesia's figures are below the ones quoted in issue 3 (36k transactional writes, "
         "164k dirty writes, 726k dirty reads a second) because the value here is a 22-field "
         "map, which Mnesia copies into and out of ETS (a bare `ets:lookup` of these documents "
         "does about 280k a second on this machine), not a 1 KB binary.\n"],
    Odd = [io_lib:format("- ~ts, ~ts (~ts): ~ts~n",
                         [name(P), store_label(S), lists:join(", ", Ids), why(R)])
           || P = #{id := PeerId} <- Peers,
              {S, R} <- lists:usort([{S, R} || #{id := Id, store := S} <- Ws,
                                              R <- [maps:get({PeerId, Id}, Results, missing)],
                                              R =/= missing, element(1, R) =/= ok]),
              Ids <- [[workload_label(Id) || #{id := Id, store := S1} <- Ws, S1 =:= S,
                                             maps:get({PeerId, Id}, Results, missing) =:= R]]],
    Cut = [io_lib:format("- ~ts, ~ts: stopped at the deadline after ~b of ~b documents~n",
                         [name(P), workload_label(Id), Ops, N])
           || P = #{id := PeerId} <- Peers, #{id := Id, count := N} <- Ws,
              {ok, #{ops := Ops}} <- [maps:get({PeerId, Id}, Results, missing)], Ops < N],
    [Fixed, Odd, Cut].

why({Tag, Why}) when is_list(Why) -> [atom_to_list(Tag), ": ", Why];
why({Tag, Why}) -> io_lib:format("~ts: ~0p", [Tag, Why]).

store_label(writes) -> "writes";
store_label({writes, Procs}) -> "writes, " ++ integer_to_list(Procs) ++ " processes (own)";
store_label({scale, N}) -> count_label(N) ++ " docs".

%% ---------------------------------------------------------------------------
%% Units
%% ---------------------------------------------------------------------------

%% @doc A throughput: `45.2k', `1.23M'.
rate(X) when X >= 1.0e6 -> float_to_list(X / 1.0e6, [{decimals, 2}]) ++ "M";
rate(X) when X >= 1.0e5 -> integer_to_list(round(X / 1000)) ++ "k";
rate(X) when X >= 1.0e3 -> float_to_list(X / 1000, [{decimals, 1}]) ++ "k";
rate(X) -> integer_to_list(round(X)).

%% @doc A throughput in a unit of its own (MiB/s, queries/s): `45.2k', `2345', `412', `41.2',
%% `4.12'.
amount(X) when X >= 1.0e4 -> rate(X);
amount(X) when X >= 100 -> integer_to_list(round(X));
amount(X) when X >= 10 -> float_to_list(X, [{decimals, 1}]);
amount(X) -> float_to_list(X, [{decimals, 2}]).

%% @doc A latency given in microseconds.
us(undefined) -> "—";
us(X) when X >= 1000 -> float_to_list(X / 1000, [{decimals, 2}]) ++ " ms";
us(X) when X >= 100 -> integer_to_list(round(X)) ++ " µs";
us(X) -> float_to_list(float(X), [{decimals, 1}]) ++ " µs".

%% @doc A size in bytes.
bytes(B) when B >= 1 bsl 30 -> float_to_list(B / (1 bsl 30), [{decimals, 2}]) ++ " GiB";
bytes(B) when B >= 1 bsl 20 -> float_to_list(B / (1 bsl 20), [{decimals, 1}]) ++ " MiB";
bytes(B) when B >= 1 bsl 10 -> float_to_list(B / (1 bsl 10), [{decimals, 1}]) ++ " KiB";
bytes(B) -> integer_to_list(B) ++ " B".

%% @doc A workload id as text: `save_doc_1', `load_1M'.
workload_label({Tag, N}) -> atom_to_list(Tag) ++ "_" ++ count_label(N);
workload_label(Id) -> atom_to_list(Id).

count_label(N) when N >= 1000000 -> integer_to_list(N div 1000000) ++ "M";
count_label(N) when N >= 1000 -> integer_to_list(N div 1000) ++ "k";
count_label(N) -> integer_to_list(N).
