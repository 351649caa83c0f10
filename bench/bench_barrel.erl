%% @doc Barrel through its public API (`barrel'), as an application would use it.
-module(bench_barrel).
-behaviour(bench_peer).

-export([open/3, close/1, op/2]).

-define(NAME, <<"bench">>).

open(Dir, _TemplatesFile, _Opts) ->
    _ = application:load(barrel),
    ok = application:set_env(barrel, data_dir, Dir),
    {ok, _} = application:ensure_all_started(barrel),
    ok = barrel:create_barrel(?NAME, #{}),
    {ok, Barrel} = barrel:open(?NAME),
    {ok, Barrel}.

close(Barrel) ->
    ok = barrel:close(Barrel),
    ok = application:stop(barrel).

op(#{op := put, batch := 1}, B) ->
    fun({_Key, Doc}) -> {ok, _, _} = barrel:save_doc(B, Doc) end;
op(#{op := put}, B) ->
    fun(Docs) ->
            {ok, Results} = barrel:save_docs(B, Docs),
            [] = [R || R <- Results, element(1, R) =/= ok]
    end;
op(#{op := update} = W, B) ->
    Revs = revisions(B, W),
    fun({Key, Doc}) -> {ok, _, _} = barrel:save_doc(B, Doc#{<<"_rev">> => map_get(Key, Revs)}) end;
op(#{op := put_flat}, B) ->
    fun({_Key, Doc}) -> {ok, _, _} = barrel:save_doc(B, Doc) end;
op(#{op := get}, B) ->
    fun(Key) -> {ok, _} = barrel:fetch_doc(B, Key) end;
op(#{op := query_id, include_docs := Docs}, B) ->
    %% A point query through the path index: `$/id' equal to the key.
    fun(Key) ->
            {ok, [_]} = barrel:find(B, {<<"$/id">>, #{equal => Key}}, #{include_docs => Docs})
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
    Extract = fun({barrel_change, _, #{<<"doc">> := #{<<"t">> := T}}}) -> {change, T};
                 (_) -> ignore
              end,
    Write = fun(_Key, Doc) -> {ok, _, _} = barrel:save_doc(B, Doc) end,
    {custom, fun(Templates) -> bench_changes:latency(W, Templates, Write, Listen, Extract) end};
op(#{op := changes_fanout} = W, B) ->
    Listen = fun() -> {ok, _} = barrel:start_listener(B, #{to => self()}) end,
    Extract = fun({barrel_change, _, _}) -> {change, undefined};
                 (_) -> ignore
              end,
    Write = fun(Docs) -> {ok, _} = barrel:save_docs(B, Docs) end,
    {custom, fun(Templates) -> bench_changes:fanout(W, Templates, Write, Listen, Extract) end};
op(_W, _B) ->
    {unsupported, "no such operation"}.

%% The current revision of every document the update workload touches (before the clock).
revisions(B, #{ks := Ks, start := Start, count := Count}) ->
    {ok, Revs} = barrel:fold_docs(B, fun(#{<<"id">> := Id, <<"_rev">> := Rev}, Acc) ->
                                             {ok, Acc#{Id => Rev}}
                                     end, #{},
                                  #{start_key => bench_docs:key(Ks, Start),
                                    end_key => bench_docs:key(Ks, Start + Count - 1),
                                    include_docs => false}),
    Revs.
