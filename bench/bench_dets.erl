%% @doc DETS from OTP: one `set' file, `insert/2' (a list for a batch), `lookup/2', `foldl/3'.
%% A DETS file holds at most 2 GB.
-module(bench_dets).
-behaviour(bench_peer).

-export([open/3, close/1, op/2, quiesce/1]).

open(Dir, _TemplatesFile, _Opts) ->
    ok = filelib:ensure_dir(filename:join(Dir, "x")),
    {ok, Tab} = dets:open_file(bench_docs, [{file, filename:join(Dir, "docs.dets")},
                                            {type, set}]),
    {ok, Tab}.

close(Tab) ->
    ok = dets:close(Tab).

%% Before each workload: the writes so far on disk.
quiesce(Tab) ->
    ok = dets:sync(Tab).

op(#{op := put, batch := 1}, T) ->
    fun({Key, Doc}) -> ok = dets:insert(T, {Key, Doc}) end;
op(#{op := put}, T) ->
    fun(Docs) -> ok = dets:insert(T, [{map_get(<<"id">>, D), D} || D <- Docs]) end;
op(#{op := update}, T) ->
    fun({Key, Doc}) -> ok = dets:insert(T, {Key, Doc}) end;
op(#{op := get}, T) ->
    fun(Key) -> [_] = dets:lookup(T, Key) end;
op(#{op := fold}, T) ->
    {fold, fun() -> dets:foldl(fun(_Obj, N) -> N + 1 end, 0, T) end};
op(_W, _T) ->
    {unsupported, "no such operation"}.
