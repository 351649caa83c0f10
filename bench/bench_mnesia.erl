%% @doc Mnesia from OTP, one `disc_copies' table of `{bench_doc, Id, Doc}', in one of two modes:
%% `transaction' (every call a transaction: write, read-then-write for an update, read, and
%% foldl) or `dirty' (dirty_write, dirty_read, foldl in async_dirty; a batch is a loop of dirty
%% writes, as Mnesia has no dirty batch).
-module(bench_mnesia).
-behaviour(bench_peer).

-export([open/3, close/1, op/2, quiesce/1]).

-define(TAB, bench_doc).
-define(BATCH, 100).

open(Dir, _TemplatesFile, #{mode := Mode}) ->
    _ = application:load(mnesia),
    ok = application:set_env(mnesia, dir, Dir),
    ok = mnesia:create_schema([node()]),
    ok = mnesia:start(),
    {atomic, ok} = mnesia:create_table(?TAB, [{disc_copies, [node()]}, {attributes, [id, doc]}]),
    ok = mnesia:wait_for_tables([?TAB], 60000),
    {ok, Mode}.

%% Before each workload: the transaction log dumped into the table's files now, not during
%% the next workload.
quiesce(_Mode) ->
    dumped = mnesia:dump_log(),
    ok.

%% Stopping flushes Mnesia's log; the driver then measures and removes the directory.
close(_Mode) ->
    stopped = mnesia:stop(),
    ok.

op(#{op := put, batch := 1}, transaction) ->
    fun({Key, Doc}) -> {atomic, ok} = mnesia:transaction(fun() -> write(Key, Doc) end) end;
op(#{op := put, batch := 1}, dirty) ->
    fun({Key, Doc}) -> ok = mnesia:dirty_write({?TAB, Key, Doc}) end;
op(#{op := put}, transaction) ->
    fun(Docs) ->
            {atomic, ok} = mnesia:transaction(
                             fun() -> lists:foreach(fun(D) -> write(map_get(<<"id">>, D), D) end,
                                                    Docs)
                             end)
    end;
op(#{op := put}, dirty) ->
    fun(Docs) -> [ok = mnesia:dirty_write({?TAB, map_get(<<"id">>, D), D}) || D <- Docs] end;
op(#{op := update}, transaction) ->
    fun({Key, Doc}) ->
            {atomic, ok} = mnesia:transaction(fun() ->
                                                      [_] = mnesia:wread({?TAB, Key}),
                                                      write(Key, Doc)
                                              end)
    end;
op(#{op := update}, dirty) ->
    fun({Key, Doc}) -> ok = mnesia:dirty_write({?TAB, Key, Doc}) end;
op(#{op := get}, transaction) ->
    fun(Key) -> {atomic, [_]} = mnesia:transaction(fun() -> mnesia:read(?TAB, Key) end) end;
op(#{op := get}, dirty) ->
    fun(Key) -> [_] = mnesia:dirty_read(?TAB, Key) end;
op(#{op := fold}, transaction) ->
    {fold, fun() -> {atomic, N} = mnesia:transaction(fun count/0), N end};
op(#{op := fold}, dirty) ->
    {fold, fun() -> mnesia:async_dirty(fun count/0) end};
op(#{op := changes_latency} = W, Mode) ->
    Write = fun(Key, Doc) -> (op(#{op => put, batch => 1}, Mode))({Key, Doc}) end,
    Extract = fun({mnesia_table_event, {write, {?TAB, _, #{<<"t">> := T}}, _}}) -> {change, T};
                 (_) -> ignore
              end,
    {custom, fun(Templates) ->
                     bench_changes:latency(W, Templates, Write, fun subscribe/0, Extract)
             end};
op(#{op := changes_fanout} = W, Mode) ->
    Extract = fun({mnesia_table_event, {write, _, _}}) -> {change, undefined};
                 (_) -> ignore
              end,
    {custom, fun(Templates) ->
                     bench_changes:fanout(W, Templates, op(#{op => put, batch => ?BATCH}, Mode),
                                          fun subscribe/0, Extract)
             end};
op(_W, _Mode) ->
    {unsupported, "no such operation"}.

%% Table events to the calling process (Mnesia's listeners).
subscribe() ->
    {ok, _} = mnesia:subscribe({table, ?TAB, simple}),
    ok.

write(Key, Doc) ->
    mnesia:write({?TAB, Key, Doc}).

count() ->
    mnesia:foldl(fun(_Obj, N) -> N + 1 end, 0, ?TAB).
