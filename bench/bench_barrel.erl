%% @doc Barrel through its public API (`barrel'), as an application would use it.
-module(bench_barrel).
-behaviour(bench_peer).

-export([open/3, close/1, op/2, quiesce/1, explain/2]).

-define(NAME, <<"bench">>).
%% The attachment workloads' one attachment a document (the same name in every peer).
-define(ATT_NAME, <<"blob">>).
-define(ATT_TYPE, <<"application/octet-stream">>).

open(Dir, _TemplatesFile, _Opts) ->
    _ = application:load(barrel),
    ok = application:set_env(barrel, data_dir, Dir),
    {ok, _} = application:ensure_all_started(barrel),
    %% (A store opened again, for the workloads that run after its disk size, has it.)
    case barrel:create_barrel(?NAME, #{}) of
        ok -> ok;
        {error, already_exists} -> ok
    end,
    {ok, Barrel} = barrel:open(?NAME),
    {ok, Barrel}.

%% A query of kind `Kind' around stored document `Key' (`s-I', `0 =< I < N'), with the number
%% of rows it returns.
query(equal, Key, _N) ->
    {<<"$/id">>, #{equal => Key}, 1};
query(prefix, Key, _N) ->
    %% The ten ids that differ from `Key' only in the last digit (N is a multiple of ten).
    {<<"$/id">>, #{prefix => binary:part(Key, 0, byte_size(Key) - 1)}, 10};
query(range, <<"s-", Digits/binary>>, N) ->
    I = binary_to_integer(Digits),
    {<<"$/seq">>, #{start_at => I, end_at => I + 99}, min(100, N - I)}.

%% `Fun' timed until the index has its writes.
indexed(B, Fun) ->
    {settled, Fun, fun() -> wait_indexed(B) end}.

%% A query waits until every write before it is in the index.
wait_indexed(B) ->
    {ok, _} = barrel:find(B, {<<"$/id">>, #{equal => <<>>}}).

%% Before each workload: until the store's background work (index, flushes, compactions) from
%% the workloads before is done, at most a minute.
quiesce(_Barrel) ->
    quiesce_until(erlang:monotonic_time(millisecond) + 60000).

quiesce_until(Deadline) ->
    case barrel:store_info() of
        {ok, #{idle := true}} ->
            ok;
        {ok, _} ->
            case erlang:monotonic_time(millisecond) < Deadline of
                true -> timer:sleep(50), quiesce_until(Deadline);
                false -> ok
            end
    end.

close(Barrel) ->
    ok = barrel:close(Barrel),
    ok = application:stop(barrel).

%% Writes are timed until their path-index entries are written too (`indexed/1'): a write
%% returns once the document is committed, its index entries follow on the indexer thread.
op(#{op := put, batch := 1}, B) ->
    indexed(B, fun({_Key, Doc}) -> {ok, _, _} = barrel:save_doc(B, Doc) end);
op(#{op := put}, B) ->
    indexed(B, fun(Docs) ->
                       {ok, Results} = barrel:save_docs(B, Docs),
                       [] = [R || R <- Results, element(1, R) =/= ok]
               end);
op(#{op := update} = W, B) ->
    Revs = revisions(B, W),
    indexed(B, fun({Key, Doc}) ->
                       {ok, _, _} = barrel:save_doc(B, Doc#{<<"_rev">> => map_get(Key, Revs)})
               end);
op(#{op := put_flat}, B) ->
    indexed(B, fun({_Key, Doc}) -> {ok, _, _} = barrel:save_doc(B, Doc) end);
op(#{op := get}, B) ->
    fun(Key) -> {ok, _} = barrel:fetch_doc(B, Key) end;
op(#{op := query, kind := Kind, include_docs := Docs, keys := N}, B) ->
    fun(Key) ->
            {Path, Select, Rows} = query(Kind, Key, N),
            {ok, Found} = barrel:find(B, {Path, Select}, #{include_docs => Docs}),
            Rows = length(Found)
    end;
op(#{op := fold}, B) ->
    {fold, fun() ->
                   {ok, N} = barrel:fold_docs(B, fun(_Doc, N) -> {ok, N + 1} end, 0, #{}),
                   N
           end};
op(#{op := changes_latency} = W, B) ->
    Listen = fun() ->
                     {ok, _} = barrel:start_listener(B, #{to => self(), include_docs => true})
             end,
    Write = fun(_Key, Doc) -> {ok, _, _} = barrel:save_doc(B, Doc) end,
    {custom, fun(Templates) ->
                     bench_changes:latency(W, Templates, Write, Listen, fun change_time/1,
                                           fun(Ds) -> #{deliveries => Ds} end)
             end};
op(#{op := replication_lag} = W, _B) ->
    {custom, fun(Templates) -> replication_lag(W, Templates) end};
op(#{op := changes_fanout} = W, B) ->
    Listen = fun() -> {ok, _} = barrel:start_listener(B, #{to => self()}) end,
    Extract = fun({barrel_change, _, _}) -> {change, undefined};
                 (_) -> ignore
              end,
    Write = fun(Docs) -> {ok, _} = barrel:save_docs(B, Docs) end,
    {custom, fun(Templates) -> bench_changes:fanout(W, Templates, Write, Listen, Extract) end};
op(#{op := att_put}, B) ->
    fun({Key, Content}) ->
            {ok, _, _} = barrel:put_attachment(B, Key, undefined, ?ATT_NAME, Content,
                                               #{content_type => ?ATT_TYPE})
    end;
op(#{op := att_get, att_bytes := Size}, B) ->
    fun(Key) -> {ok, <<_:Size/binary>>} = barrel:fetch_attachment(B, Key, ?ATT_NAME) end;
op(#{op := replicate} = W, _B) ->
    {custom, fun(_Templates) -> replicate(W) end};
op(_W, _B) ->
    {unsupported, "no such operation"}.

%% One one-shot replication of the bench barrel into a new barrel of the same store: directly
%% (`local'), or through Barrel's HTTP server started in this VM for the run, over its
%% WebSocket stream (`ws') or the CouchDB protocol (`http'). The target exists before the clock
%% starts (the WebSocket endpoint does not create one); the figure is documents written a
%% second, from `replicate/2' to the `completed' message. Past the deadline the replication is
%% cancelled and the documents written so far are reported.
replicate(#{id := Id, via := Via, count := Count, deadline_ms := DeadlineMs}) ->
    Target = <<"replica-", (atom_to_binary(Id))/binary>>,
    ok = barrel:create_barrel(Target, #{}),
    {Http, Endpoint} = endpoint(Via, Target),
    try
        T0 = erlang:monotonic_time(),
        {ok, Rep} = barrel:replicate(#{<<"source">> => ?NAME, <<"target">> => Endpoint},
                                     #{to => self()}),
        Outcome = await_replication(Rep, T0 + erlang:convert_time_unit(DeadlineMs, millisecond,
                                                                        native)),
        %% Until the target's path index has every document (see `indexed/1').
        {ok, TargetBarrel} = barrel:open(Target),
        wait_indexed(TargetBarrel),
        T1 = erlang:monotonic_time(),
        Written = case Outcome of
                      {completed, N} when N >= Count -> N;
                      {completed, N} -> error({replicated_too_few, N, Count});
                      {failed, Why} -> error({replication_failed, Why});
                      {deadline, N} ->
                          ok = barrel:cancel_replication(Rep),
                          N
                  end,
        bench_runner:stats(Written, T1 - T0, [])
    after
        Http =:= undefined orelse barrel:stop_http(Http),
        barrel:delete_barrel(Target)
    end.

%% Barrel `Target' as a replication sees it `via' `local', `ws' or `http', with the HTTP server
%% started for it (`undefined' for `local').
endpoint(local, Target) ->
    {undefined, Target};
endpoint(Via, Target) ->
    {ok, H} = barrel:start_http(#{port => 0}),
    {ok, #{url := <<"http://", Host/binary>> = Url}} = barrel:http_info(H),
    {H, case Via of
            ws -> <<"ws://", Host/binary, "/", Target/binary>>;
            http -> <<Url/binary, "/barrels/", Target/binary>>
        end}.

%% Continuous replication lag under write load: a continuous replication from a new barrel to
%% another (`via' as for `replicate/1'), `procs' writers offering `rate' writes a second to the
%% source, and a listener on the target: the latency is source `save_doc' call → change heard
%% on the target (see `bench_changes:latency/5').
replication_lag(#{id := Id, via := Via} = W, Templates) ->
    Name = atom_to_binary(Id),
    Source = <<"lag-source-", Name/binary>>,
    Target = <<"lag-target-", Name/binary>>,
    ok = barrel:create_barrel(Source, #{}),
    ok = barrel:create_barrel(Target, #{}),
    {ok, S} = barrel:open(Source),
    {ok, T} = barrel:open(Target),
    {Http, Endpoint} = endpoint(Via, Target),
    {ok, Rep} = barrel:replicate(#{<<"source">> => Source, <<"target">> => Endpoint},
                                 #{continuous => true}),
    try
        Listen = fun() ->
                         {ok, _} = barrel:start_listener(T, #{to => self(), include_docs => true})
                 end,
        Write = fun(_Key, Doc) -> {ok, _, _} = barrel:save_doc(S, Doc) end,
        bench_changes:latency(W, Templates, Write, Listen, fun change_time/1)
    after
        _ = barrel:cancel_replication(Rep),
        Http =:= undefined orelse barrel:stop_http(Http),
        _ = barrel:delete_barrel(Source),
        _ = barrel:delete_barrel(Target)
    end.

%% What RocksDB's background work had to do with the slowest deliveries of a changes workload,
%% once the store is closed: `deliveries' become `tail'. The flushes and compactions come from
%% the `EVENT_LOG_v1' lines the store's RocksDB instances (documents, path index) write to
%% their `LOG' files as they start and finish (wall-clock µs; RocksDB buffers those files for
%% up to ten seconds, and closing the store writes them out), matched against each delivery's
%% way from its write call to its listener. The slowest deliveries are those at or above the
%% p99; `p99_outside_us' is the p99 of the deliveries that overlapped no flush and no
%% compaction.
explain(_Dir, #{deliveries := []} = Stats) ->
    maps:remove(deliveries, Stats);
explain(Dir, #{deliveries := Deliveries} = Stats) ->
    Logs = [filename:join(Dir, F) || F <- filelib:wildcard("LOG", Dir) ++
                                         filelib:wildcard("*/LOG", Dir)],
    Offset = erlang:time_offset(),
    Us = fun(T) -> erlang:convert_time_unit(T, native, microsecond) end,
    %% Each delivery's way: from its write call to its arrival, in system time.
    Ways = [{Us(A - L + Offset), Us(A + Offset), L} || {A, L} <- Deliveries],
    From = lists:min([S || {S, _, _} <- Ways]),
    To = lists:max([E || {_, E, _} <- Ways]),
    P99 = bench_runner:percentile(lists:sort([L || {_, _, L} <- Ways]), 0.99),
    Slow = [W || W = {_, _, L} <- Ways, L >= P99],
    Logged = [KW || F <- Logs, KW = {_, S, E} <- windows(F), S =< To, E >= From],
    Kinds = [{Kind, [{S, E} || {K, S, E} <- Logged, K =:= Kind]} || Kind <- [flush, compaction]],
    Overlaps = fun({S, E, _}, Windows) -> lists:any(fun({WS, WE}) -> S =< WE andalso E >= WS end,
                                                    Windows) end,
    AllWindows = [{S, E} || {_, S, E} <- Logged],
    Quiet = [L || W = {_, _, L} <- Ways, not Overlaps(W, AllWindows)],
    PerKind = maps:from_list(
                [{Kind,
                  #{count => length(Ws),
                    ms => lists:sum([min(E, To) - max(S, From) || {S, E} <- Ws]) / 1000,
                    slow => length([W || W <- Slow, Overlaps(W, Ws)])}}
                 || {Kind, Ws} <- Kinds]),
    Tail = PerKind#{slow => length(Slow), deliveries => length(Ways), quiet => length(Quiet),
                    p99_outside_us => maps:get(p99_us, bench_runner:stats(length(Quiet), 0,
                                                                          Quiet))},
    (maps:remove(deliveries, Stats))#{tail => Tail}.

%% The `{flush | compaction, Start, End}' (wall-clock µs) of every flush and compaction in
%% RocksDB's `LOG' file `File' (of a closed store: one started and never finished did not
%% finish, and is left out).
windows(File) ->
    case file:read_file(File) of
        {ok, Bin} ->
            Re = <<"\"time_micros\": ([0-9]+), \"job\": ([0-9]+), "
                   "\"event\": \"(flush|compaction)_(started|finished)\"">>,
            Events = case re:run(Bin, Re, [global, {capture, all_but_first, binary}]) of
                         {match, Ms} -> Ms;
                         nomatch -> []
                     end,
            %% Job ids are unique within a RocksDB instance, flushes and compactions alike.
            Ends = maps:from_list([{Job, binary_to_integer(T)}
                                   || [T, Job, _, <<"finished">>] <- Events]),
            [{binary_to_atom(Kind), binary_to_integer(T), maps:get(Job, Ends)}
             || [T, Job, Kind, <<"started">>] <- Events, is_map_key(Job, Ends)];
        {error, _} ->
            []
    end.

%% The write time a changes workload's document carries.
change_time({barrel_change, _, #{<<"doc">> := #{<<"t">> := T}}}) -> {change, T};
change_time(_) -> ignore.

%% Progress comes after each batch: at the deadline, the documents written by then.
await_replication(Rep, Deadline) ->
    await_replication(Rep, Deadline, 0).

await_replication(Rep, Deadline, Written) ->
    Left = erlang:convert_time_unit(max(0, Deadline - erlang:monotonic_time()), native,
                                    millisecond),
    receive
        {barrel_replication, Rep, #{state := completed, docs_written := N}} -> {completed, N};
        {barrel_replication, Rep, #{state := failed, last_error := Why}} -> {failed, Why};
        {barrel_replication, Rep, #{docs_written := N}} -> await_replication(Rep, Deadline, N)
    after Left ->
            {deadline, Written}
    end.

%% The current revision of every document the update workload touches (before the clock).
revisions(B, #{ks := Ks, start := Start, count := Count}) ->
    {ok, Revs} = barrel:fold_docs(B, fun(#{<<"id">> := Id, <<"_rev">> := Rev}, Acc) ->
                                             {ok, Acc#{Id => Rev}}
                                     end, #{},
                                  #{start_key => bench_docs:key(Ks, Start),
                                    end_key => bench_docs:key(Ks, Start + Count - 1),
                                    include_docs => false}),
    Revs.
