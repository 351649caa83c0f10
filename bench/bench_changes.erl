%% @doc The changes workloads, the same for every in-VM peer that can notify: a peer gives a
%% way to write (one document, or a batch), a way for a process to start hearing the writes
%% (`Listen', called in that process), and how to read the write's timestamp from what it
%% hears (`Extract').
%%
%% <ul>
%% <li>`changes_latency': `procs' writers together offer `rate' writes a second (each paced
%%     on the clock), each document carrying the monotonic time its `save_doc' call started;
%%     one listener process records, for every change it receives, the time since then. The
%%     latency is write call → listener message, commit included. With `flat', the documents
%%     are those of `save_doc_flat_1' (same size, one indexed value), so the write path is far
%%     from saturated and the figure is mostly the notification path.</li>
%% <li>`changes_fanout': `listeners' processes listen; one writer stores `count' documents in
%%     batches of 100 as fast as it can; the figure is changes delivered (listeners × documents)
%%     a second, from the first write until the last listener has everything.</li>
%% </ul>
-module(bench_changes).

-export([latency/5, latency/6, fanout/5]).

-define(BATCH, 100).

%% @doc `changes_latency'. `Write(Key, Doc)'; `Listen()' runs in the listening process;
%% `Extract(Msg)' is `{change, T}' or `ignore'.
latency(W, Templates, Write, Listen, Extract) ->
    latency(W, Templates, Write, Listen, Extract, fun(_Deliveries) -> #{} end).

%% @doc {@link latency/5}, its stats merged with `Explain(Deliveries)': every delivery as
%% `{Arrival, Latency}' (native units, `Arrival' in `erlang:monotonic_time()'), for a peer
%% that can tell what was going on when the slow ones came.
latency(#{ks := Ks, count := Count, procs := Procs, rate := Rate, deadline_ms := D} = W,
        Templates, Write, Listen, Extract, Explain) ->
    Flat = maps:get(flat, W, false),
    Parent = self(),
    Receiver = spawn_link(fun() ->
                                  Listen(),
                                  Parent ! {listening, self()},
                                  receive_latencies(Parent, Extract, Count, [], deadline(D))
                          end),
    receive {listening, Receiver} -> ok end,
    Interval = erlang:convert_time_unit(1, second, native) * Procs div Rate,
    T0 = erlang:monotonic_time(),
    Writers = [spawn_link(fun() ->
                                  Mine = [I || I <- lists:seq(P, Count - 1, Procs)],
                                  pace(Mine, T0 + P * Interval div Procs, Interval, Ks,
                                       {Flat, Templates}, Write),
                                  Parent ! {written, self()}
                          end) || P <- lists:seq(0, Procs - 1)],
    [receive {written, Wr} -> ok end || Wr <- Writers],
    {Deliveries, TEnd} = receive {latencies, Receiver, L, T} -> {L, T} end,
    Lats = [Lat || {_, Lat} <- Deliveries],
    Stats = bench_runner:stats(length(Lats), TEnd - T0, Lats),
    maps:merge(Stats#{offered_rate => Rate}, Explain(Deliveries)).

pace([], _Next, _Interval, _Ks, _Templates, _Write) ->
    ok;
pace([I | Rest], Next, Interval, Ks, {Flat, Templates}, Write) ->
    wait_until(Next),
    Doc = case Flat of
              %% As in save_doc_flat_1: the same size, one indexed value.
              true -> #{<<"id">> => bench_docs:key(Ks, I), <<"blob">> => binary:copy(<<"x">>, 1000)};
              false -> bench_docs:doc(Templates, Ks, I, 0)
          end,
    T = erlang:monotonic_time(),
    Write(bench_docs:key(Ks, I), Doc#{<<"t">> => T}),
    pace(Rest, Next + Interval, Interval, Ks, {Flat, Templates}, Write).

%% Sleeps (at least a millisecond, the timer's resolution) while ahead of schedule, so a writer
%% catches up in a short burst after each sleep: spinning instead would keep the schedulers
%% busy and starve the processes being measured.
wait_until(T) ->
    case T - erlang:monotonic_time() of
        Left when Left > 0 ->
            timer:sleep(max(1, erlang:convert_time_unit(Left, native, millisecond)));
        _ -> ok
    end.

receive_latencies(Parent, _Extract, 0, Acc, _Deadline) ->
    report(Parent, Acc);
receive_latencies(Parent, Extract, Left, Acc, Deadline) ->
    receive
        Msg ->
            Now = erlang:monotonic_time(),
            case Extract(Msg) of
                {change, T} when Now > Deadline ->
                    report(Parent, [{Now, Now - T} | Acc]);
                {change, T} ->
                    receive_latencies(Parent, Extract, Left - 1, [{Now, Now - T} | Acc],
                                      Deadline);
                ignore ->
                    receive_latencies(Parent, Extract, Left, Acc, Deadline)
            end
    after 5000 ->
            report(Parent, Acc)
    end.

report(Parent, Acc) ->
    Parent ! {latencies, self(), Acc, erlang:monotonic_time()}.

deadline(Ms) ->
    erlang:monotonic_time() + erlang:convert_time_unit(Ms, millisecond, native).

%% @doc `changes_fanout'. `WriteBatch(Docs)'; `Listen()' and `Extract(Msg)' as for
%% {@link latency/5}.
fanout(#{ks := Ks, count := Count, listeners := N, deadline_ms := D}, Templates, WriteBatch,
       Listen, Extract) ->
    Parent = self(),
    Listeners = [spawn_link(fun() ->
                                    Listen(),
                                    Parent ! {listening, self()},
                                    count_changes(Parent, Extract, Count, deadline(D))
                            end) || _ <- lists:seq(1, N)],
    [receive {listening, L} -> ok end || L <- Listeners],
    Docs = [bench_docs:doc(Templates, Ks, I, 0) || I <- lists:seq(0, Count - 1)],
    Batches = bench_runner:chunks(Docs, ?BATCH),
    erlang:garbage_collect(),
    T0 = erlang:monotonic_time(),
    lists:foreach(WriteBatch, Batches),
    Got = [receive {counted, L, Seen, T} -> {Seen, T} end || L <- Listeners],
    TEnd = lists:max([T || {_, T} <- Got]),
    bench_runner:stats(lists:sum([S || {S, _} <- Got]), TEnd - T0, []).

count_changes(Parent, Extract, Count, Deadline) ->
    count_changes(Parent, Extract, Count, 0, Deadline).

count_changes(Parent, _Extract, Count, Count, _Deadline) ->
    counted(Parent, Count);
count_changes(Parent, Extract, Count, Seen, Deadline) ->
    receive
        Msg ->
            case Extract(Msg) of
                {change, _} ->
                    case erlang:monotonic_time() > Deadline of
                        true -> counted(Parent, Seen + 1);
                        false -> count_changes(Parent, Extract, Count, Seen + 1, Deadline)
                    end;
                ignore ->
                    count_changes(Parent, Extract, Count, Seen, Deadline)
            end
    after 5000 ->
            counted(Parent, Seen)
    end.

counted(Parent, Seen) ->
    Parent ! {counted, self(), Seen, erlang:monotonic_time()}.
