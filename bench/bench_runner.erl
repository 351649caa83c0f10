%% @doc Runs one workload against an in-VM peer: builds each process's items before the clock
%% starts, starts all processes at once, and times every call.
%%
%% A peer gives a fun of one item (see {@link items/3}); this module does the rest, the same way
%% for every peer, so only the peer's own work is inside the timed loop. Each call's latency is
%% the gap between consecutive timestamps of its process, so the loop reads the clock once a call.
-module(bench_runner).

-export([run/3, items/3, stats/3, percentile/2, chunks/2, thread_cpu/0]).

%% @doc Runs `Workload' calling `Fun' on each item; returns `{ok, Result}' with the documents
%% done, the seconds and the latencies (p50, p99 in microseconds, per call).
-spec run(map(), fun((term()) -> term()) | {fold, fun(() -> non_neg_integer())}
          | {custom, fun((tuple()) -> map())}, tuple()) ->
          {ok, map()}.
run(_W, {custom, Run}, Templates) ->
    %% The peer's workload runs (and times) itself, in a fresh process.
    Cpu0 = thread_cpu(),
    {Pid, Ref} = spawn_monitor(fun() -> exit({done, Run(Templates)}) end),
    receive
        {'DOWN', Ref, process, Pid, {done, Stats}} -> {ok, with_cpu(Stats, Cpu0)};
        {'DOWN', Ref, process, Pid, R} -> exit({worker_failed, R})
    end;
run(#{op := fold}, {fold, Fold}, _Templates) ->
    %% In a fresh process, like every other workload.
    Cpu0 = thread_cpu(),
    {Pid, Ref} = spawn_monitor(fun() ->
                                       T0 = erlang:monotonic_time(),
                                       N = Fold(),
                                       exit({done, N, erlang:monotonic_time() - T0})
                               end),
    receive
        {'DOWN', Ref, process, Pid, {done, N, Elapsed}} ->
            {ok, with_cpu(stats(N, Elapsed, []), Cpu0)};
        {'DOWN', Ref, process, Pid, R} -> exit({worker_failed, R})
    end;
run(W, {settled, Fun, Settle}, Templates) ->
    run(W, Fun, Templates, Settle);
run(W, Fun, Templates) ->
    run(W, Fun, Templates, fun() -> ok end).

%% `Settle' runs once every process is done, on the clock: the work a peer does after its calls
%% return but before the writes are all usable (Barrel's path index catching up).
run(W = #{procs := Procs}, Fun, Templates, Settle) ->
    Parent = self(),
    Budget = erlang:convert_time_unit(maps:get(deadline_ms, W), millisecond, native),
    %% Default heaps: a big min_heap_size would build the items faster, but then every
    %% collection in the timed loop allocates (and page-faults) a heap that big, which slowed
    %% allocation-heavy peers (every fetch builds a document) by up to 40%.
    Workers = [spawn_monitor(fun() -> worker(Parent, W, P, Fun, Templates) end)
               || P <- lists:seq(0, Procs - 1)],
    [receive {ready, Pid} -> ok; {'DOWN', _, process, _, R} -> exit({worker_failed, R}) end
     || {Pid, _} <- Workers],
    Cpu0 = thread_cpu(),
    T0 = erlang:monotonic_time(),
    [Pid ! {go, T0, T0 + Budget} || {Pid, _} <- Workers],
    Results = [receive
                   {done, Pid, Done, Lat} -> {Done, Lat};
                   {'DOWN', Ref, process, Pid, R} -> exit({worker_failed, R})
               end || {Pid, Ref} <- Workers],
    Settle(),
    Elapsed = erlang:monotonic_time() - T0,
    [erlang:demonitor(Ref, [flush]) || {_, Ref} <- Workers],
    Done = lists:sum([D || {D, _} <- Results]),
    {ok, with_cpu(stats(Done, Elapsed, lists:append([L || {_, L} <- Results])), Cpu0)}.

%% @doc CPU seconds this OS process has used: `{Process, Threads}', the whole process's
%% (threads that have ended included; `undefined' where /proc does not say) and each live
%% thread's by its id, with what the thread is (its name from /proc, digits dropped):
%% `schedulers', `dirty_cpu', `dirty_io', Barrel's `writer', `indexer' and `notifier',
%% RocksDB's `flushes' (its high-priority pool) and `compactions' (low), or `other'. No
%% threads where /proc is not there.
-spec thread_cpu() -> {float() | undefined, #{binary() => {atom(), float()}}}.
thread_cpu() ->
    Proc = "/proc/" ++ os:getpid(),
    Tick = clock_tick(),
    Process = case thread_stat(Proc ++ "/stat") of
                  {_, All} -> All / Tick;
                  none -> undefined
              end,
    Tasks = case file:list_dir(Proc ++ "/task") of
                {ok, Names} -> Names;
                {error, _} -> []
            end,
    Threads = maps:from_list(
                [{list_to_binary(Tid), {thread_group(Name), Ticks / Tick}}
                 || Tid <- Tasks,
                    {Name, Ticks} <- [thread_stat(filename:join([Proc, "task", Tid, "stat"]))]]),
    {Process, Threads}.

%% A thread's name and user + system clock ticks (fields 14 and 15 of its stat line; the name
%% is in parentheses and may hold spaces).
thread_stat(File) ->
    case file:read_file(File) of
        {ok, Bin} ->
            case {binary:match(Bin, <<"(">>), binary:matches(Bin, <<")">>)} of
                {{Open, 1}, [_ | _] = Closes} ->
                    {Close, 1} = lists:last(Closes),
                    Name = binary:part(Bin, Open + 1, Close - Open - 1),
                    Rest = binary:split(binary:part(Bin, Close + 2, byte_size(Bin) - Close - 2),
                                        <<" ">>, [global]),
                    case length(Rest) >= 13 of
                        true ->
                            {Name, binary_to_integer(lists:nth(12, Rest))
                                   + binary_to_integer(lists:nth(13, Rest))};
                        false ->
                            none
                    end;
                _ ->
                    none
            end;
        {error, _} ->
            none
    end.

thread_group(Name) ->
    case re:replace(Name, "[0-9]", "", [global, {return, binary}]) of
        <<"_scheduler">> -> schedulers;
        <<"_dirty_cpu", _/binary>> -> dirty_cpu;
        <<"_dirty_io", _/binary>> -> dirty_io;
        <<"barrel-writer">> -> writer;
        <<"barrel-indexer">> -> indexer;
        <<"barrel-notifier">> -> notifier;
        <<"rocksdb:high">> -> flushes;
        <<"rocksdb:low">> -> compactions;
        _ -> other
    end.

%% Clock ticks a second of /proc's stat files (USER_HZ, 100 on Linux).
clock_tick() ->
    case persistent_term:get({?MODULE, clock_tick}, undefined) of
        undefined ->
            Tick = case string:to_integer(os:cmd("getconf CLK_TCK 2>/dev/null")) of
                       {N, _} when is_integer(N), N > 0 -> N;
                       _ -> 100
                   end,
            persistent_term:put({?MODULE, clock_tick}, Tick),
            Tick;
        Tick ->
            Tick
    end.

%% `Stats' with `cpu': the CPU seconds since the sample `Cpu0' of the threads alive now, summed
%% by what they are, and `ended': those of the threads that ended meanwhile (the process's
%% figure less its live threads').
with_cpu(Stats, {_, Threads0}) when map_size(Threads0) =:= 0 ->
    Stats;
with_cpu(Stats, {Process0, Threads0}) ->
    {Process1, Threads1} = thread_cpu(),
    %% A thread started since the first sample counts from zero. (A thread id the kernel gave
    %% again to a new thread could count less than zero: it counts nothing.)
    Groups = maps:fold(fun(Tid, {Group, Secs}, Acc) ->
                               Before = case Threads0 of
                                            #{Tid := {_, S0}} -> S0;
                                            #{} -> 0.0
                                        end,
                               maps:update_with(Group, fun(V) -> V + max(0.0, Secs - Before) end,
                                                max(0.0, Secs - Before), Acc)
                       end, #{}, Threads1),
    Ended = case is_number(Process0) andalso is_number(Process1) of
                true -> max(0.0, Process1 - Process0 - lists:sum(maps:values(Groups)));
                false -> 0.0
            end,
    Stats#{cpu => Groups#{ended => Ended}}.

%% A process stops at the end of its items or at the deadline, whichever comes first.
worker(Parent, W, P, Fun, Templates) ->
    Items = items(W, P, Templates),
    %% Two minor collections move the items to the old heap, where the collections during
    %% the timed loop leave them alone.
    _ = [erlang:garbage_collect(self(), [{type, minor}]) || _ <- [1, 2]],
    Batched = maps:get(batch, W, 1) > 1,
    Parent ! {ready, self()},
    receive {go, T0, Deadline} -> ok end,
    {Done, Lat} = loop(Items, Fun, T0, Deadline, Batched, 0, []),
    Parent ! {done, self(), Done, Lat}.

loop([], _Fun, _Prev, _Deadline, _Batched, Done, Lat) ->
    {Done, Lat};
loop([Item | Items], Fun, Prev, Deadline, Batched, Done, Lat) ->
    Fun(Item),
    T = erlang:monotonic_time(),
    Done1 = Done + case Batched of true -> length(Item); false -> 1 end,
    if T > Deadline -> {Done1, [T - Prev | Lat]};
       true -> loop(Items, Fun, T, Deadline, Batched, Done1, [T - Prev | Lat])
    end.

%% @doc The items process `P' of a workload works through: its contiguous share of
%% `count' items, keys `start'..`start + count - 1' of keyspace `ks'.
%% <ul>
%% <li>`put' with `batch' 1: `{Key, Doc}'; with `batch' B > 1: lists of B documents.</li>
%% <li>`update': `{Key, Doc}', the document's next content (variant 1).</li>
%% <li>`get': a key; `pattern' `seq' walks the share in order (wrapping around the `keys'
%% stored), `random' picks uniformly among the `keys' stored.</li>
%% <li>`att_put': `{Key, Content}', the `att_bytes' bytes of {@link bench_docs:attachment/2}
%% for a new document `Key'; `att_get': a key whose attachment `att_put' stored.</li>
%% </ul>
-spec items(map(), non_neg_integer(), tuple()) -> [term()].
%% `put_flat' items are `{Key, Doc}' with a 1 KB single-string document; `query' items are
%% keys, like `get'.
items(W = #{op := Op, ks := Ks, count := Count, procs := Procs}, P, Templates) ->
    Start = maps:get(start, W, 0),
    Per = (Count + Procs - 1) div Procs,
    First = P * Per,
    N = max(0, min(Per, Count - First)),
    Idx = lists:seq(First, First + N - 1),
    case Op of
        put ->
            Docs = [{bench_docs:key(Ks, Start + I), bench_docs:doc(Templates, Ks, Start + I, 0)}
                    || I <- Idx],
            case maps:get(batch, W, 1) of
                1 -> Docs;
                B -> chunks([D || {_, D} <- Docs], B)
            end;
        update ->
            [{bench_docs:key(Ks, Start + I), bench_docs:doc(Templates, Ks, Start + I, 1)}
             || I <- Idx];
        put_flat ->
            %% Same size as the standard documents, but one string over 256 bytes: the path
            %% index then holds only the `$/id' entry (the index write overhead baseline).
            Blob = binary:copy(<<"x">>, 1000),
            [{bench_docs:key(Ks, Start + I), #{<<"id">> => bench_docs:key(Ks, Start + I),
                                               <<"blob">> => Blob}}
             || I <- Idx];
        att_put ->
            Bytes = maps:get(att_bytes, W),
            [{Key, bench_docs:attachment(Key, Bytes)}
             || I <- Idx, Key <- [bench_docs:key(Ks, Start + I)]];
        att_get ->
            [bench_docs:key(Ks, Start + I) || I <- Idx];
        Q when Q =:= get; Q =:= query ->
            Keys = maps:get(keys, W),
            case maps:get(pattern, W) of
                seq -> [bench_docs:key(Ks, Start + I rem Keys) || I <- Idx];
                random ->
                    rand:seed(exsss, {P + 1, 7, 11}),
                    [bench_docs:key(Ks, Start + rand:uniform(Keys) - 1) || _ <- Idx]
            end
    end.

chunks(L, B) -> chunks(L, B, 0, [], []).

chunks([], _B, _N, [], Acc) -> lists:reverse(Acc);
chunks([], _B, _N, Chunk, Acc) -> lists:reverse(Acc, [lists:reverse(Chunk)]);
chunks(L, B, B, Chunk, Acc) -> chunks(L, B, 0, [], [lists:reverse(Chunk) | Acc]);
chunks([X | L], B, N, Chunk, Acc) -> chunks(L, B, N + 1, [X | Chunk], Acc).

%% @doc A result from documents done, elapsed native time units and latencies (native units).
-spec stats(non_neg_integer(), integer(), [integer()]) -> map().
stats(Done, Elapsed, Lat) ->
    Secs = erlang:convert_time_unit(Elapsed, native, nanosecond) / 1.0e9,
    Sorted = lists:sort(Lat),
    Us = fun(undefined) -> undefined;
            (T) -> erlang:convert_time_unit(T, native, nanosecond) / 1000
         end,
    #{ops => Done, secs => Secs,
      p50_us => Us(percentile(Sorted, 0.50)), p99_us => Us(percentile(Sorted, 0.99))}.

%% @doc The value at fraction `P' of `Sorted' (ascending; nearest rank), as `stats/3' takes
%% its p50 and p99; `undefined' for none.
-spec percentile([T], float()) -> T | undefined.
percentile([], _P) -> undefined;
percentile(Sorted, P) ->
    N = length(Sorted),
    lists:nth(max(1, min(N, ceil(N * P))), Sorted).
