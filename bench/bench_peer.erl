%% @doc What a peer of the benchmark implements. A peer is a store the driver
%% (`barrel_bench') runs the same workloads on: Barrel itself, Mnesia, DETS, and the external
%% peers (RocksDB, PouchDB) reached through `bench_external'.
%%
%% For each data set a workload needs (a "store"), the driver calls `open/3' with a fresh
%% directory, runs that store's workloads in order, then `close/1' and removes the directory.
%%
%% An in-VM peer exports `op/2': for a workload (a map, see `barrel_bench:workloads/1') it
%% returns the fun doing one call on one item, and `bench_runner' does the looping, the
%% concurrency and the timing the same way for every peer. Setup (such as reading the current
%% revisions before an update) happens in `op/2', before the clock starts. An external peer
%% exports `run/2' instead and times the workload itself.
-module(bench_peer).

-callback open(Dir :: file:filename(), TemplatesFile :: file:filename(), Opts :: map()) ->
    {ok, State :: term()}.
-callback close(State :: term()) -> ok.
-callback op(Workload :: map(), State :: term()) ->
    fun((Item :: term()) -> term()) | {fold, fun(() -> non_neg_integer())}
    | {custom, fun((Templates :: tuple()) -> Stats :: map())}
    | {settled, fun((Item :: term()) -> term()), Settle :: fun(() -> term())}
    | {unsupported, Why :: string()}.
-callback run(Workload :: map(), State :: term()) ->
    {ok, #{ops := non_neg_integer(), secs := float(), p50_us := number() | undefined,
           p99_us := number() | undefined}}
    | {unsupported, Why :: string()} | {error, Why :: term()}.

%% Waits, untimed, until the store's background work from the workloads before (flushes,
%% compactions, log dumps, index) is done, so that each workload is measured on its own:
%% called before every timed workload. Optional: a peer without background work (or without a
%% way to wait for it) leaves it out.
-callback quiesce(State :: term()) -> ok.

%% Completes a workload's stats once its store is closed and before its directory is removed
%% (`Dir', as given to `open/3'), for what a peer can only tell then, such as what its logs
%% say happened during the workload. Called for every stats map of the store's workloads that
%% has `deliveries' (see `bench_changes:latency/6'); the result replaces it. Optional.
-callback explain(Dir :: file:filename(), Stats :: map()) -> map().

-optional_callbacks([op/2, run/2, quiesce/1, explain/2]).
