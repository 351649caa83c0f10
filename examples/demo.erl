#!/usr/bin/env escript
%% -*- erlang -*-
%% A tour of the document API, step by step, against a throwaway data dir.
%%
%%   make demo                  (builds first)
%%   escript examples/demo.erl  (after `rebar3 compile')
%%
%% Each step prints the call and what it returned; any unexpected result stops
%% the demo with exit status 1.
-mode(compile).

main(_Args) ->
    Root = filename:dirname(filename:dirname(filename:absname(escript:script_name()))),
    true = code:add_patha(filename:join(Root, "_build/default/lib/barrel/ebin")),
    DataDir = temp_dir(),
    try
        demo(DataDir),
        io:format("~nDemo finished.~n"),
        cleanup(DataDir),
        halt(0)
    catch
        Class:Reason:Stack ->
            io:format(standard_error, "~nDemo failed: ~p:~p~n~p~n", [Class, Reason, Stack]),
            cleanup(DataDir),
            halt(1)
    end.

demo(DataDir) ->
    io:format("data_dir: ~s~n", [DataDir]),
    %% Keep the output to the steps: no info report when the app stops.
    ok = logger:set_primary_config(level, warning),
    %% Load before set_env: loading resets the environment to the .app defaults.
    ok = application:load(barrel),
    ok = application:set_env(barrel, data_dir, DataDir),
    {ok, _} = step("application:ensure_all_started(barrel)",
                   application:ensure_all_started(barrel)),

    ok = step("barrel:create_barrel(<<\"demo\">>, #{})",
              barrel:create_barrel(<<"demo">>, #{})),
    {ok, Barrel} = step("barrel:open(<<\"demo\">>)", barrel:open(<<"demo">>)),

    Doc = #{<<"name">> => <<"Ada">>, <<"langs">> => [<<"erlang">>, <<"rust">>]},
    {ok, Id, Rev1} = step("barrel:save_doc(Barrel, Doc) with no id",
                          barrel:save_doc(Barrel, Doc)),

    {ok, #{<<"id">> := Id, <<"_rev">> := Rev1, <<"name">> := <<"Ada">>} = Fetched} =
        step("barrel:fetch_doc(Barrel, Id)", barrel:fetch_doc(Barrel, Id)),

    {ok, Id, Rev2} = step("barrel:save_doc(Barrel, Fetched#{<<\"name\">> => <<\"Ada L.\">>})"
                          "  % Fetched has id and _rev Rev1",
                          barrel:save_doc(Barrel, Fetched#{<<"name">> => <<"Ada L.">>})),
    true = Rev2 =/= Rev1,

    {error, conflict} = step("barrel:save_doc(Barrel, Fetched#{<<\"name\">> => <<\"Ada K.\">>})"
                             "  % Rev1 is stale now",
                             barrel:save_doc(Barrel, Fetched#{<<"name">> => <<"Ada K.">>})),

    {ok, #{<<"_rev">> := Rev2, <<"name">> := <<"Ada L.">>}} =
        step("barrel:fetch_doc(Barrel, Id)", barrel:fetch_doc(Barrel, Id)),

    {ok, Id, Rev3} = step("barrel:put_attachment(Barrel, Id, Rev2, <<\"note.txt\">>, "
                          "<<\"hello\">>, #{content_type => <<\"text/plain\">>})",
                          barrel:put_attachment(Barrel, Id, Rev2, <<"note.txt">>, <<"hello">>,
                                                #{content_type => <<"text/plain">>})),
    {ok, #{<<"_attachments">> := #{<<"note.txt">> := #{<<"length">> := 5}}}} =
        step("barrel:fetch_doc(Barrel, Id)  % the attachment as a stub",
             barrel:fetch_doc(Barrel, Id)),
    {ok, <<"hello">>} = step("barrel:fetch_attachment(Barrel, Id, <<\"note.txt\">>)",
                             barrel:fetch_attachment(Barrel, Id, <<"note.txt">>)),

    {ok, Id, _DelRev} = step("barrel:delete_doc(Barrel, Id, Rev3)",
                             barrel:delete_doc(Barrel, Id, Rev3)),

    {error, not_found} = step("barrel:fetch_doc(Barrel, Id) after the delete",
                              barrel:fetch_doc(Barrel, Id)),

    ok = step("application:stop(barrel)", application:stop(barrel)).

%% Prints a step and its result, and returns the result for the caller to match.
step(Call, Result) ->
    io:format("~n> ~s~n  ~p~n", [Call, Result]),
    Result.

temp_dir() ->
    Tmp = case os:getenv("TMPDIR") of
              false -> "/tmp";
              "" -> "/tmp";
              Dir -> Dir
          end,
    Name = io_lib:format("barrel-demo-~s-~b", [os:getpid(), erlang:unique_integer([positive])]),
    Path = filename:join(Tmp, Name),
    ok = file:make_dir(Path),
    Path.

cleanup(DataDir) ->
    _ = application:stop(barrel),
    _ = file:del_dir_r(DataDir),
    ok.
