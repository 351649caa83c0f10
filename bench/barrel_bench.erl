%% @doc The benchmark driver behind `make bench': runs Barrel and its peers on the same
%% workloads, one after the other on this machine, then writes `bench/RESULTS.md' and prints
%% one table.
%%
%% Environment:
%% <ul>
%% <li>`BENCH_QUICK=1': small counts, for trying the harness.</li>
%% <li>`BENCH_FULL=1': runs the 1M-document step on every peer (by default Mnesia, DETS,
%%     PouchDB and Barrel HTTP stop at 100k) and adds the 10M-document step (Barrel and RocksDB
%%     only).</li>
%% <li>`BENCH_PEERS=barrel,rocksdb': run only these peers.</li>
%% <li>`BENCH_ONLY=save_doc_1,fetch_1M': run only these workloads, by the names the table
%%     prints (and the loads and writes whose documents they need).</li>
%% <li>`BENCH_OUT=path': where to write the results. By default only a whole run (no
%%     `BENCH_QUICK', `BENCH_PEERS' or `BENCH_ONLY') writes them, to `bench/RESULTS.md'.</li>
%% <li>`BENCH_TMP=dir': where the peers' data lives while they run (removed at the end).</li>
%% <li>`BENCH_ROUNDS=N': how many times the workloads of the close targets are measured (the
%%     main run, then N - 1 rounds of just those; default 3, 1 for none: see `rounds/5').</li>
%% </ul>
-module(barrel_bench).

-export([main/0, workloads/1, peers/1]).

-define(TEMPLATES, 1000).

%% ---------------------------------------------------------------------------
%% What runs
%% ---------------------------------------------------------------------------

config() ->
    Quick = os:getenv("BENCH_QUICK", "") =:= "1",
    Full = os:getenv("BENCH_FULL", "") =:= "1",
    Base = case Quick of
               true -> #{writes => 2000, reads => 5000, att_mib => 50, sizes => [1000, 10000],
                         read_size => 10000, fold_size => 10000, query_size => 10000,
                         deadline_ms => 5000, rep_deadline_ms => 30000,
                         load_deadline_ms => 60000};
               false -> #{writes => 50000, reads => 100000, att_mib => 250,
                          sizes => [10000, 100000, 1000000],
                          read_size => 100000, fold_size => 1000000,
                          query_size => 1000000, deadline_ms => 4000,
                          rep_deadline_ms => 60000, load_deadline_ms => 180000}
           end,
    Sizes = maps:get(sizes, Base) ++ [10000000 || Full, not Quick],
    Base#{quick => Quick, full => Full, sizes => Sizes,
          load_deadline_ms => case Full of
                                  true -> 3600000;
                                  false -> maps:get(load_deadline_ms, Base)
                              end,
          peers => list_env("BENCH_PEERS"), only => list_env("BENCH_ONLY"),
          rounds => case string:to_integer(os:getenv("BENCH_ROUNDS", "3")) of
                        {N, ""} when N >= 1 -> N;
                        _ -> error({bad_setting, "BENCH_ROUNDS must be a whole number >= 1"})
                    end,
          %% Only a whole run replaces RESULTS.md.
          out => case {os:getenv("BENCH_OUT"), Quick, list_env("BENCH_PEERS"),
                       list_env("BENCH_ONLY")} of
                     {false, false, all, all} -> "bench/RESULTS.md";
                     {false, _, _, _} -> undefined;
                     {Out, _, _, _} -> Out
                 end,
          tmp => case os:getenv("BENCH_TMP") of
                     false -> filename:join("/tmp", "barrel-bench-" ++ os:getpid());
                     Tmp -> Tmp
                 end}.

list_env(Name) ->
    case os:getenv(Name, "") of
        "" -> all;
        V -> [list_to_atom(S) || S <- string:lexemes(V, ", ")]
    end.

%% @doc The peers, in the order of the table's columns. `max_docs': larger data sets are skipped
%% for that peer, with the reason given.
peers(#{full := Full}) ->
    Floor = filename:join(cargo_target_dir(), "release/rocksdb_floor"),
    Http = filename:join(cargo_target_dir(), "release/http_peer"),
    %% Loading 1M documents takes Mnesia (whose log dumps fall behind) and PouchDB two minutes
    %% or more each, DETS (10k inserts a second) 100-110 s, and the 1M step of Barrel HTTP
    %% (load, fetch, fold) about two: a default run stops them at 100k to stay under 15
    %% minutes on a slow 2-core machine.
    Slow = fun(Why) when Full -> {1000000, Why};
              (_Why) -> {100000, "1M documents only with BENCH_FULL=1 (the load alone takes "
                                 "minutes)"}
           end,
    InRam = "disc_copies keeps every document in RAM",
    [#{id => barrel, name => "Barrel", mod => bench_barrel, opts => #{}},
     #{id => barrel_http, name => "Barrel HTTP", mod => bench_external,
       opts => #{exe => Http, args => []},
       max_docs => Slow("loading 10M documents over HTTP would take over 15 minutes")},
     #{id => mnesia_tx, name => "Mnesia tx", mod => bench_mnesia, opts => #{mode => transaction},
       max_docs => Slow(InRam)},
     #{id => mnesia_dirty, name => "Mnesia dirty", mod => bench_mnesia, opts => #{mode => dirty},
       max_docs => Slow(InRam)},
     #{id => dets, name => "DETS", mod => bench_dets, opts => #{},
       max_docs => Slow("a DETS file holds at most 2 GB")},
     #{id => rocksdb, name => "RocksDB", mod => bench_external,
       opts => #{exe => Floor, args => []}},
     #{id => pouchdb, name => "PouchDB", mod => bench_external,
       opts => #{exe => os:find_executable("node"), args => ["bench/pouchdb_peer.js"]},
       max_docs => Slow("loading 10M documents would take over 15 minutes")}].

%% @doc Every workload, in the order they run. A workload is a map:
%% <ul>
%% <li>`id', `title': its name in the tables.</li>
%% <li>`store': the data set it runs in: `writes' (one store for the write workloads, each in
%%     its own keyspace), `{writes, Procs}' (an empty store of its own, for the concurrent
%%     `save_doc' workloads) or `{scale, N}' (N documents loaded by the store's `setup'
%%     workload).</li>
%% <li>`reopened': runs after the store was closed, its disk size measured, and opened again
%%     (the replication workloads, which write their copies beside the documents they read:
%%     so the copies stay out of the disk size, and no second store of the same documents is
%%     loaded for them).</li>
%% <li>`op': `put' (`batch' documents a call), `update', `get' (`pattern' `seq' or `random'
%%     over `keys' stored documents), `query' (a path query of `kind' `equal', `prefix' or
%%     `range' around a stored document picked as `get' does, see `bench_barrel'), `fold',
%%     `disk_size' (measured by the driver once the
%%     store is closed), `changes_latency' (`procs' writers offering `rate' writes a second)
%%     or `changes_fanout' (to `listeners' listeners), see `bench_changes'; `replicate' (the
%%     store's documents to a new database, `via' `local', `ws' or `http') and
%%     `replication_lag' (a continuous replication between two new barrels under `rate'
%%     writes a second), see `bench_barrel'; `att_put' (a new document with one attachment of `att_bytes' bytes, see
%%     `bench_docs:attachment/2') or `att_get' (that attachment read back whole).</li>
%% <li>`ks', `start', `count', `procs': the keys `ks-start'..`ks-(start+count-1)', shared among
%%     `procs' concurrent processes.</li>
%% <li>`count_from': take `count' from the documents another workload managed to write.</li>
%% <li>`unit', `per_item': the table shows the rate in `unit' (such as `"MiB/s"'), an item
%%     counting `per_item' of it (default: docs/s, an item a document).</li>
%% <li>`peers': the peers that run it (default: all). For the others it is `n/a', and a store
%%     none of whose workloads they run is not even opened (its load would be wasted).</li>
%% <li>`main': a row of the table; `scale => {N, Metric}': a row of the scale part of the
%%     table (`load', `disk' or `fetch' at N documents).</li>
%% </ul>
%% Adding a workload is adding a map here (and a clause to the peers' `op/2' for a new `op').
workloads(#{writes := W, reads := R, att_mib := AM, sizes := Sizes, read_size := RS,
            fold_size := FS, query_size := QS, deadline_ms := D, rep_deadline_ms := RD,
            load_deadline_ms := LD}) ->
    Writes = [w(save_doc_1, "save_doc, 1 process", put, <<"w1">>, W, 1, #{}),
              %% Concurrent writers in stores of their own, empty as save_doc_1's is when it
              %% starts: in the shared store they came after its documents, and a larger store
              %% costs more flushing and compacting (16 processes: 45 against 34 µs of CPU a
              %% document), which the scaling target then counted against concurrency.
              w(save_doc_16, "save_doc, 16 processes", put, <<"w16">>, W, 16,
                #{store => {writes, 16}}),
              w(save_doc_64, "save_doc, 64 processes", put, <<"w64">>, W, 64,
                #{store => {writes, 64}}),
              w(save_docs_100, "save_docs, batches of 100", put, <<"b100">>, 2 * W, 1,
                #{batch => 100}),
              w(save_docs_1000, "save_docs, batches of 1000", put, <<"b1000">>, 2 * W, 1,
                #{batch => 1000}),
              w(update, "update (save_doc with _rev), 1 process", update, <<"w1">>, W, 1,
                #{count_from => save_doc_1}),
              %% Index write overhead: the same size, one indexed value instead of 32.
              w(save_doc_flat_1, "save_doc, 1 process, docs with 1 indexed value", put_flat,
                <<"wf">>, W, 1, #{}),
              %% Changes (see bench_changes): latency at a fixed offered rate, and fan-out.
              w(changes_latency, "changes: write → listener message at 10k writes/s offered "
                "(4 writers, 1 listener; deliveries/s)", changes_latency, <<"cl">>, W div 2, 4,
                #{rate => 10000}),
              w(changes_latency_flat, "changes: write → listener message at 10k writes/s "
                "offered, docs with 1 indexed value (deliveries/s)", changes_latency, <<"clf">>,
                W div 2, 4, #{rate => 10000, flat => true}),
              w(changes_fanout_1, "changes: delivered to 1 listener (changes/s)",
                changes_fanout, <<"cf1">>, W div 2, 1, #{listeners => 1}),
              w(changes_fanout_10, "changes: delivered to 10 listeners (changes/s)",
                changes_fanout, <<"cf10">>, W div 5, 1, #{listeners => 10}),
              w(changes_fanout_100, "changes: delivered to 100 listeners (changes/s)",
                changes_fanout, <<"cf100">>, W div 25, 1, #{listeners => 100}),
              %% Continuous replication (Barrel only): lag from a source write to the change
              %% on the target, under 5k writes/s offered (see bench_barrel:replication_lag/2).
              lag(replication_lag_local, "local to local", local, W),
              lag(replication_lag_ws, "over WebSocket (same VM)", ws, W),
              lag(replication_lag_http, "over HTTP, CouchDB protocol (same VM)", http, W),
              %% Attachments: AM MiB in 1 MiB attachments, then half as much in 64 KiB ones.
              att(att_put_1m, "put_attachment 1 MiB, 1 process", att_put, <<"a1m">>, AM, 1,
                  1 bsl 20, #{}),
              att(att_get_1m, "fetch_attachment 1 MiB, 1 process", att_get, <<"a1m">>, AM, 1,
                  1 bsl 20, #{count_from => att_put_1m}),
              att(att_put_64k, "put_attachment 64 KiB, 16 processes", att_put, <<"a64k">>,
                  8 * AM, 16, 1 bsl 16, #{})],
    Reads = fun(N) ->
                    [w(fetch_random_1, "fetch_doc random, 1 process", get, <<"s">>, R, 1,
                       #{pattern => random, keys => N, store => {scale, N}, scale => {N, fetch}}),
                     w(fetch_seq_1, "fetch_doc sequential, 1 process", get, <<"s">>, R, 1,
                       #{pattern => seq, keys => N, store => {scale, N}}),
                     w(fetch_random_16, "fetch_doc random, 16 processes", get, <<"s">>, R, 16,
                       #{pattern => random, keys => N, store => {scale, N}}),
                     w(fetch_seq_16, "fetch_doc sequential, 16 processes", get, <<"s">>, R, 16,
                       #{pattern => seq, keys => N, store => {scale, N}})]
            end,
    %% Path-index queries (Barrel only) over the largest default data set, each around a
    %% random stored document `s-I' (see `bench_barrel:query/3'): `$/id' equal to its id (one
    %% row, without and with the document), `$/id' starting with its id but the last digit
    %% (ten rows), `$/seq' from I to I + 99 (a hundred rows, without and with the documents).
    Queries = fun(N) ->
                      Q = fun(Id, What, Kind, Docs, Count) ->
                                  w(Id, "query over " ++ count_label(N) ++ " docs: " ++ What,
                                    query, <<"s">>, Count, 1,
                                    #{pattern => random, keys => N, store => {scale, N},
                                      kind => Kind, include_docs => Docs, peers => [barrel],
                                      unit => "queries/s", per_item => 1})
                          end,
                      [Q(query_eq, "$/id equal, 1 row", equal, false, R),
                       Q(query_eq_docs, "$/id equal, 1 row + doc", equal, true, R),
                       Q(query_prefix, "$/id prefix, 10 rows", prefix, false, R div 2),
                       Q(query_range, "$/seq range, 100 rows", range, false, R div 10),
                       Q(query_range_docs, "$/seq range, 100 rows + docs", range, true,
                         R div 20)]
              end,
    Fold = fun(N) ->
                   [w(list_to_atom("fold_docs_" ++ count_label(N)),
                      "fold_docs over " ++ count_label(N) ++ " docs", fold, <<"s">>, N, 1,
                      #{store => {scale, N}})]
           end,
    Scale = fun(N) ->
                    Store = #{store => {scale, N}, main => false},
                    [w({load, N}, "load " ++ count_label(N), put, <<"s">>, N, 1,
                       Store#{batch => 1000, setup => true, scale => {N, load},
                              deadline_ms => LD}),
                     w({disk, N}, "disk size", disk_size, <<"s">>, N, 1,
                       Store#{scale => {N, disk}})]
                        ++ case N of
                               RS -> Reads(N);
                               _ -> [w({fetch, N}, "fetch_doc random", get, <<"s">>, min(R, N), 1,
                                       Store#{pattern => random, keys => N,
                                              scale => {N, fetch}})]
                           end
                        ++ [F || lists:member(N, [RS, FS]), F <- Fold(N)]
                        ++ [Q || N =:= QS, Q <- Queries(N)]
            end,
    %% Replication (Barrel and PouchDB): every document of the loaded read store to a new
    %% database, in one one-shot replication each, once that store's disk size is measured
    %% (`reopened'). A deadline of its own: a replication of 100k documents takes 5-60 s
    %% (PouchDB the 60).
    Replication = fun(N) ->
                          Rep = #{store => {scale, N}, peers => [barrel, pouchdb],
                                  reopened => true, deadline_ms => RD},
                          [w(replicate_local, "replicate " ++ count_label(N) ++ " docs, local "
                             "to local", replicate, <<"s">>, N, 1, Rep#{via => local}),
                           w(replicate_ws, "replicate " ++ count_label(N) ++ " docs over "
                             "WebSocket (same VM)", replicate, <<"s">>, N, 1, Rep#{via => ws}),
                           w(replicate_http, "replicate " ++ count_label(N) ++ " docs over "
                             "HTTP, CouchDB protocol (same VM)", replicate, <<"s">>, N, 1,
                             Rep#{via => http})]
                  end,
    [maps:merge(#{deadline_ms => D}, X)
     || X <- Writes ++ lists:append([Scale(N) || N <- Sizes]) ++ Replication(RS)].

w(Id, Title, Op, Ks, Count, Procs, Extra) ->
    maps:merge(#{id => Id, title => Title, op => Op, ks => Ks, start => 0, count => Count,
                 procs => Procs, batch => 1, store => writes, main => true, setup => false,
                 reopened => false},
               Extra).

%% A continuous replication lag workload: 2 writers offering 5k writes/s to the source.
lag(Id, How, Via, W) ->
    w(Id, "continuous replication " ++ How ++ ": source write → change on the target at 5k "
      "writes/s offered (deliveries/s)", replication_lag, <<"rl">>, W div 4, 2,
      #{rate => 5000, via => Via, peers => [barrel, pouchdb]}).

%% An attachment workload: `Bytes' a document, its rate in MiB/s. Mnesia and DETS have no
%% attachments.
att(Id, Title, Op, Ks, Count, Procs, Bytes, Extra) ->
    w(Id, Title, Op, Ks, Count, Procs,
      Extra#{att_bytes => Bytes, unit => "MiB/s", per_item => Bytes / (1 bsl 20),
             peers => [barrel, barrel_http, rocksdb, pouchdb]}).

count_label(N) when N >= 1000000 -> integer_to_list(N div 1000000) ++ "M";
count_label(N) when N >= 1000 -> integer_to_list(N div 1000) ++ "k";
count_label(N) -> integer_to_list(N).

%% ---------------------------------------------------------------------------
%% Running
%% ---------------------------------------------------------------------------

%% @doc Runs the benchmark and halts: 0 when it completed (even with peers' errors, which the
%% tables show), 1 when the harness itself failed.
main() ->
    Config = #{tmp := Tmp} = config(),
    Started = erlang:monotonic_time(second),
    _ = logger:set_primary_config(level, error),
    ok = io:setopts([{encoding, unicode}]),
    Status = try
                 run(Config, Started),
                 0
             catch
                 Class:Reason:Stack ->
                     io:format(standard_error, "bench failed: ~p:~p~n~p~n", [Class, Reason, Stack]),
                     1
             after
                 rm_rf(Tmp)
             end,
    halt(Status).

run(Config = #{tmp := Tmp}, Started) ->
    Machine = #{load := Load} = bench_report:machine(),
    case string:to_float(binary_to_list(hd(Load))) of
        {L, _} when L > 0.5 ->
            io:format("bench: load average ~ts: something else is running, figures will be "
                      "noisy~n", [lists:join(" ", Load)]);
        _ -> ok
    end,
    ok = filelib:ensure_dir(filename:join(Tmp, "x")),
    Templates = bench_docs:templates(?TEMPLATES),
    TemplatesFile = filename:join(Tmp, "templates.jsonl"),
    ok = bench_docs:write_templates(TemplatesFile, Templates),
    Workloads = selected(workloads(Config), Config),
    Peers = [P || P = #{id := Id} <- peers(Config), wanted(Id, maps:get(peers, Config))],
    io:format("bench: ~b workloads x ~b peers; data in ~ts~n",
              [length(Workloads), length(Peers), Tmp]),
    Results = lists:foldl(fun(Peer, Acc) ->
                                  run_peer(Peer, Workloads, Templates, TemplatesFile, Config, Acc)
                          end, #{}, Peers),
    Rounds = rounds(Workloads, Peers, Templates, TemplatesFile, Config),
    Secs = erlang:monotonic_time(second) - Started,
    Report = #{machine => Machine, config => Config, peers => Peers, workloads => Workloads,
               results => Results, rounds => Rounds, secs => Secs},
    io:put_chars(["\n", bench_report:table(Report), "\n"]),
    case maps:get(out, Config) of
        undefined -> ok;
        Out ->
            ok = file:write_file(Out, unicode:characters_to_binary(bench_report:markdown(Report))),
            io:format("bench: wrote ~ts~n", [Out])
    end,
    io:format("bench: took ~bs~n", [Secs]).

%% The workloads of the targets close enough to depend on when they were measured
%% (`bench_report:round_workloads/0'), measured again after the main run: `BENCH_ROUNDS' - 1
%% rounds, each running every peer concerned on fresh stores (loads included). Barrel ran
%% first in the main run: it runs last in the first round, first in the next, and so on, so
%% neither side always runs in the same place.
%% Returns one results map per round.
rounds(Workloads, Peers, Templates, TemplatesFile, Config = #{rounds := N}) ->
    Ids = [Id || #{id := Id} <- Workloads],
    PeerIds = [PeerId || #{id := PeerId} <- Peers],
    Runs = fun({PeerId, Id}) -> lists:member(PeerId, PeerIds) andalso lists:member(Id, Ids) end,
    %% Only the ratios whose both sides are in this run.
    Pairs = lists:usort([W || {Num, Den} <- bench_report:round_workloads(), Runs(Num), Runs(Den),
                              W <- [Num, Den]]),
    ByPeer = [{Peer, [Id || {P, Id} <- Pairs, P =:= PeerId]}
              || Peer = #{id := PeerId} <- Peers, lists:keymember(PeerId, 1, Pairs)],
    case ByPeer of
        [] ->
            [];
        _ ->
            [begin
                 io:format("bench: targets round ~b of ~b~n", [R, N]),
                 Order = case R rem 2 of
                             0 -> lists:reverse(ByPeer);
                             1 -> ByPeer
                         end,
                 lists:foldl(
                   fun({Peer, Only}, Acc) ->
                           Ws = selected(workloads(Config), Config#{only => Only}),
                           run_peer(Peer, Ws, Templates, TemplatesFile, Config, Acc)
                   end, #{}, Order)
             end || R <- lists:seq(2, N)]
    end.

wanted(_Id, all) -> true;
wanted(Id, List) -> lists:member(Id, List).

%% BENCH_ONLY keeps the named workloads, those they take their documents from, and the setup
%% of their stores.
selected(Workloads, #{only := all}) ->
    Workloads;
selected(Workloads, #{only := Only0}) ->
    Only = Only0 ++ [From || #{id := Id, count_from := From} <- Workloads,
                             named(Id, Only0)],
    Stores = [S || #{id := Id, store := S} <- Workloads, named(Id, Only)],
    [X || X = #{id := Id, store := S, setup := Setup} <- Workloads,
          named(Id, Only) orelse (Setup andalso lists:member(S, Stores))].

%% Is workload `Id' in `Names', by id or by the name the table prints (`fetch_1M' for
%% `{fetch, 1000000}')?
named(Id, Names) ->
    lists:member(Id, Names)
        orelse lists:member(list_to_atom(bench_report:workload_label(Id)), Names).

run_peer(Peer = #{id := PeerId}, Workloads, Templates, TemplatesFile, Config, Results) ->
    Stores = lists:usort(fun store_order/2, [S || #{store := S} <- Workloads]),
    lists:foldl(
      fun(Store, Acc0) ->
              {InStore, NotHere} = lists:partition(fun(W) -> runs(PeerId, W) end,
                                                   [X || X = #{store := S} <- Workloads,
                                                         S =:= Store]),
              Acc = lists:foldl(fun(#{id := Id, setup := false, peers := Ps}, A) ->
                                        A#{{PeerId, Id} => {unsupported, only(Ps, Config)}};
                                   (_Setup, A) -> A
                                end, Acc0, NotHere),
              case {too_big(Peer, Store), [X || X = #{setup := false} <- InStore]} of
                  {_, []} when NotHere =/= [] ->
                      Acc;
                  {{true, Why}, _} ->
                      lists:foldl(fun(#{id := Id}, A) -> A#{{PeerId, Id} => {skipped, Why}} end,
                                  Acc, InStore);
                  {false, _} ->
                      run_store(Peer, Store, InStore, Templates, TemplatesFile, Config, Acc)
              end
      end, Results, Stores).

runs(PeerId, #{peers := Peers}) -> lists:member(PeerId, Peers);
runs(_PeerId, _W) -> true.

only(Peers, Config) ->
    Names = [Name || #{id := Id, name := Name} <- peers(Config), lists:member(Id, Peers)],
    {Init, [Last]} = lists:split(length(Names) - 1, Names),
    lists:flatten(["run on ", [[lists:join(", ", Init), " and "] || Init =/= []], Last, " only"]).

store_order(writes, _) -> true;
store_order(_, writes) -> false;
store_order({writes, _}, {scale, _}) -> true;
store_order({scale, _}, {writes, _}) -> false;
store_order({_, A}, {_, B}) -> A =< B.

too_big(#{max_docs := {Max, Why}}, {_, N}) when N > Max -> {true, Why};
too_big(_Peer, _Store) -> false.

run_store(#{id := PeerId, mod := Mod, opts := Opts}, Store, Workloads, Templates,
          TemplatesFile, #{tmp := Tmp}, Results) ->
    Dir = filename:join([Tmp, atom_to_list(PeerId), store_name(Store)]),
    ok = filelib:ensure_dir(filename:join(Dir, "x")),
    %% Disk size is measured once the store is closed: at rest, logs flushed. The `reopened'
    %% workloads run after that, in the store opened again.
    {Disk, Timed} = lists:partition(fun(#{op := Op}) -> Op =:= disk_size end, Workloads),
    {Reopened, First} = lists:partition(fun(#{reopened := R}) -> R end, Timed),
    Setup = [W || W = #{setup := true} <- Workloads],
    Run = fun(Ws, Acc) ->
                  with_store(Mod, Dir, TemplatesFile, Opts,
                             fun(State) ->
                                     lists:foldl(fun(W, A) ->
                                                         run_workload(PeerId, Mod, State, W,
                                                                      Setup, Templates, A)
                                                 end, Acc, Ws)
                             end)
          end,
    Failed = fun(Ws, Why, Acc) ->
                     lists:foldl(fun(#{id := Id}, A) -> A#{{PeerId, Id} => {error, Why}} end,
                                 Acc, Ws)
             end,
    try
        case explained(Mod, Dir, Run(First, Results)) of
            {ok, R1} ->
                R2 = lists:foldl(fun(W = #{id := Id}, Acc) ->
                                         R = {ok, dir_size(Dir)},
                                         log(PeerId, W, R, 0),
                                         Acc#{{PeerId, Id} => R}
                                 end, R1, Disk),
                case Reopened of
                    [] ->
                        R2;
                    _ ->
                        case explained(Mod, Dir, Run(Reopened, R2)) of
                            {ok, R3} -> R3;
                            {open_failed, Why} -> Failed(Reopened, Why, R2)
                        end
                end;
            {open_failed, Why} ->
                Failed(Workloads, Why, Results)
        end
    after
        rm_rf(Dir)
    end.

%% The results once the store in `Dir' is closed, with the stats that carry `deliveries'
%% completed by the peer's `explain/2' (see `bench_peer').
explained(Mod, Dir, {ok, Results}) ->
    {ok, maps:map(fun(_Key, {ok, #{deliveries := _} = Stats}) ->
                          {ok, case erlang:function_exported(Mod, explain, 2) of
                                   true -> Mod:explain(Dir, Stats);
                                   false -> maps:remove(deliveries, Stats)
                               end};
                     (_Key, R) ->
                          R
                  end, Results)};
explained(_Mod, _Dir, Other) ->
    Other.

%% `{ok, Fun(State)}' with the store in `Dir' open (closed after), or `{open_failed, Why}'.
with_store(Mod, Dir, TemplatesFile, Opts, Fun) ->
    try Mod:open(Dir, TemplatesFile, Opts) of
        {ok, State} ->
            try Fun(State) of
                R ->
                    ok = Mod:close(State),
                    {ok, R}
            catch
                Class:Reason:Stack ->
                    catch Mod:close(State),
                    erlang:raise(Class, Reason, Stack)
            end
    catch
        Class:Reason ->
            {open_failed, {open_failed, Class, Reason}}
    end.

store_name(writes) -> "writes";
store_name({Kind, N}) -> atom_to_list(Kind) ++ "-" ++ integer_to_list(N).

run_workload(PeerId, Mod, State, W0 = #{id := Id}, Setup, Templates, Results) ->
    case setup_failed(PeerId, W0, Setup, Results) of
        {true, Why} ->
            Results#{{PeerId, Id} => {skipped, Why}};
        false ->
            W = with_count(PeerId, W0, Results),
            Q0 = erlang:monotonic_time(millisecond),
            quiesce(Mod, State),
            T0 = erlang:monotonic_time(millisecond),
            R = measure(Mod, State, W, Templates),
            log(PeerId, W, R, erlang:monotonic_time(millisecond) - T0, T0 - Q0),
            Results#{{PeerId, Id} => R}
    end.

%% Once a store's setup workload failed or was cut short, its other workloads do not run.
setup_failed(PeerId, #{setup := false}, Setup, Results) ->
    case [{N, maps:get({PeerId, Id}, Results, missing)} || #{id := Id, count := N} <- Setup] of
        [{N, {ok, #{ops := Ops}}}] when N > Ops -> {true, "setup cut short"};
        [{_, {ok, _}}] -> false;
        [] -> false;
        [_] -> {true, "setup failed"}
    end;
setup_failed(_PeerId, _W, _Setup, _Results) ->
    false.

with_count(PeerId, W = #{count_from := From}, Results) ->
    case Results of
        #{{PeerId, From} := {ok, #{ops := Ops}}} -> W#{count := min(Ops, maps:get(count, W))};
        _ -> W
    end;
with_count(_PeerId, W, _Results) ->
    W.

%% Untimed: the previous workloads' background work must not land in this one's figures.
quiesce(Mod, State) ->
    case erlang:function_exported(Mod, quiesce, 1) of
        true -> ok = Mod:quiesce(State);
        false -> ok
    end.

measure(Mod, State, W, Templates) ->
    try
        case erlang:function_exported(Mod, run, 2) of
            true ->
                Mod:run(W, State);
            false ->
                case Mod:op(W, State) of
                    {unsupported, Why} -> {unsupported, Why};
                    Fun -> bench_runner:run(W, Fun, Templates)
                end
        end
    catch
        Class:Reason -> {error, short_error(Class, Reason)}
    end.

short_error(exit, {worker_failed, {{badmatch, Value}, _}}) -> {badmatch, Value};
short_error(exit, {worker_failed, {Reason, _Stack}}) -> Reason;
short_error(_Class, Reason) -> Reason.

log(PeerId, W, R, Ms) ->
    log(PeerId, W, R, Ms, 0).

%% `QuietMs': the wait for the store to come to rest before the workload (shown from 0.1 s).
log(PeerId, W = #{id := Id}, R, Ms, QuietMs) ->
    What = case R of
               {ok, #{bytes := B, log_bytes := L}} ->
                   io_lib:format("~ts (logs ~ts)", [bench_report:bytes(B), bench_report:bytes(L)]);
               {ok, #{ops := Ops} = M} ->
                   io_lib:format("~ts (~b docs, p50 ~ts, p99 ~ts)",
                                 [bench_report:throughput(W, M), Ops,
                                  bench_report:us(maps:get(p50_us, M)),
                                  bench_report:us(maps:get(p99_us, M))]);
               {Tag, Why} -> io_lib:format("~p: ~0p", [Tag, Why])
           end,
    Quiet = case QuietMs >= 100 of
                true -> io_lib:format(" (at rest after ~.1fs)", [QuietMs / 1000]);
                false -> ""
            end,
    io:format("  ~-13ts ~-30ts ~ts [~.1fs]~ts~n",
              [PeerId, bench_report:workload_label(Id), What, Ms / 1000, Quiet]).

%% All bytes, and those in write-ahead logs (`*.log': RocksDB, LevelDB; Mnesia's `*.LOG').
dir_size(Dir) ->
    filelib:fold_files(Dir, ".*", true,
                       fun(F, #{bytes := B, log_bytes := L}) ->
                               Size = filelib:file_size(F),
                               Log = case string:lowercase(filename:extension(F)) of
                                         ".log" -> Size;
                                         _ -> 0
                                     end,
                               #{bytes => B + Size, log_bytes => L + Log}
                       end, #{bytes => 0, log_bytes => 0}).

rm_rf(Dir) ->
    _ = file:del_dir_r(Dir),
    ok.

cargo_target_dir() ->
    case os:getenv("CARGO_TARGET_DIR") of
        false -> filename:join(os:getenv("HOME"), ".cache/barrel-target");
        Dir -> Dir
    end.
