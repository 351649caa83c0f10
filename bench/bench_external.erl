%% @doc A peer in another OS process (the raw RocksDB floor, Barrel's HTTP server with its
%% client, PouchDB on Node), driven by a line protocol on its stdin and stdout:
%% ```
%% open <dir> <templates file>           -> ok
%% run op=put ks=w1 start=0 count=N ...   -> ok ops=N secs=S p50_us=X p99_us=Y
%%                                           (or: error unsupported <why>)
%% quiesce                                -> ok (the store's background work done)
%% close                                  -> ok
%% '''
%% The process times its own work, in its own runtime, over the same keys and document bytes
%% (see `bench_docs'). It ends when its stdin closes; `close/1' waits until it has.
-module(bench_external).
-behaviour(bench_peer).

-export([open/3, close/1, run/2, quiesce/1]).

-define(SETUP_MS, 600000).

open(Dir, TemplatesFile, #{exe := Exe, args := Args}) ->
    Port = open_port({spawn_executable, Exe},
                     [{args, Args}, {line, 65536}, binary, exit_status, use_stdio]),
    {os_pid, OsPid} = erlang:port_info(Port, os_pid),
    State = #{port => Port, os_pid => OsPid},
    case call(State, ["open ", Dir, " ", TemplatesFile], ?SETUP_MS) of
        {ok, _} -> {ok, State};
        {error, Why} -> close(State), error({open_failed, Exe, Why})
    end.

close(#{port := Port, os_pid := OsPid} = State) ->
    _ = call(State, "close", ?SETUP_MS),
    catch port_close(Port),
    wait_exit(OsPid, 100).

quiesce(State) ->
    case call(State, "quiesce", ?SETUP_MS) of
        {ok, _} -> ok;
        {error, Why} -> error({quiesce_failed, Why})
    end.

run(W, State) ->
    %% `via' only for the replication workloads, `att_bytes' for the attachment ones, `rate'
    %% and `flat' for the latency ones.
    Params = [[" ", atom_to_list(K), "=", param(maps:get(K, W, Default))]
              || {K, Default} <- [{op, put}, {ks, <<"k">>}, {start, 0}, {count, 0}, {procs, 1},
                                  {batch, 1}, {keys, 0}, {pattern, seq}, {deadline_ms, 60000}]
                 ++ [{K, none} || K <- [via, att_bytes, rate, flat], is_map_key(K, W)]],
    case call(State, ["run" | Params], maps:get(deadline_ms, W, 60000) + ?SETUP_MS) of
        {ok, Fields} ->
            F = maps:from_list([list_to_tuple(string:split(Field, "="))
                                || Field <- string:lexemes(Fields, " ")]),
            Num = fun(K) -> binary_to_number(map_get(K, F)) end,
            Lat = fun(K) -> case Num(K) of Z when Z == 0 -> undefined; X -> X end end,
            {ok, #{ops => Num(<<"ops">>), secs => Num(<<"secs">>),
                   p50_us => Lat(<<"p50_us">>), p99_us => Lat(<<"p99_us">>)}};
        {error, <<"unsupported", Why/binary>>} ->
            {unsupported, string:trim(binary_to_list(Why))};
        {error, Why} ->
            {error, Why}
    end.

param(A) when is_atom(A) -> atom_to_list(A);
param(I) when is_integer(I) -> integer_to_list(I);
param(B) when is_binary(B) -> B.

binary_to_number(B) ->
    try binary_to_integer(B) catch error:badarg -> binary_to_float(B) end.

call(#{port := Port}, Line, TimeoutMs) ->
    Port ! {self(), {command, [Line, $\n]}},
    receive
        {Port, {data, {eol, <<"ok", Rest/binary>>}}} -> {ok, string:trim(Rest)};
        {Port, {data, {eol, <<"error ", Why/binary>>}}} -> {error, Why};
        {Port, {data, {eol, Other}}} -> {error, {unexpected, Other}};
        {Port, {exit_status, S}} -> {error, {exited, S}}
    after TimeoutMs ->
            {error, timeout}
    end.

%% The process ends on end of input; kill it if it has not after 10 s.
wait_exit(OsPid, 0) ->
    _ = os:cmd("kill -9 " ++ integer_to_list(OsPid)),
    ok;
wait_exit(OsPid, Tries) ->
    case os:cmd("kill -0 " ++ integer_to_list(OsPid) ++ " 2>/dev/null && echo alive") of
        "alive" ++ _ -> timer:sleep(100), wait_exit(OsPid, Tries - 1);
        _ -> ok
    end.
