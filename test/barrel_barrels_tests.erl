%% Barrels: create, open, close, delete, list, infos.
-module(barrel_barrels_tests).
-include_lib("eunit/include/eunit.hrl").

barrels_test_() ->
    {setup, fun barrel_test_setup:start/0, fun barrel_test_setup:stop/1,
     [fun create_then_open/0,
      fun create_twice_is_already_exists/0,
      fun open_unknown_is_not_found/0,
      fun invalid_names_are_refused/0,
      fun bad_params_are_refused/0,
      fun talk_params_are_accepted/0,
      fun list_is_sorted/0,
      fun infos_by_name_and_handle/0,
      fun closed_handle_is_closed/0,
      fun deleted_barrel_handle_is_not_found/0,
      fun delete_unknown_is_not_found/0,
      fun recreated_barrel_is_empty/0,
      fun compact_gives_a_deleted_barrels_space_back/0,
      fun store_info_shows_background_work_until_the_store_rests/0]}.

create_then_open() ->
    ?assertEqual(ok, barrel:create_barrel(<<"b-create">>, #{})),
    ?assertMatch({ok, _}, barrel:open(<<"b-create">>)).

create_twice_is_already_exists() ->
    ok = barrel:create_barrel(<<"b-twice">>, #{}),
    ?assertEqual({error, already_exists}, barrel:create_barrel(<<"b-twice">>, #{})).

open_unknown_is_not_found() ->
    ?assertEqual({error, not_found}, barrel:open(<<"nope">>)).

invalid_names_are_refused() ->
    ?assertEqual({error, {invalid_name, <<"a/b">>}}, barrel:create_barrel(<<"a/b">>, #{})),
    ?assertEqual({error, {invalid_name, <<>>}}, barrel:create_barrel(<<>>, #{})),
    ?assertEqual({error, {invalid_name, <<"_x">>}}, barrel:create_barrel(<<"_x">>, #{})),
    ?assertEqual({error, {invalid_name, "list"}}, barrel:create_barrel("list", #{})),
    ?assertEqual({error, {invalid_name, atom}}, barrel:open(atom)),
    ?assertEqual({error, {invalid_name, 1}}, barrel:delete_barrel(1)),
    %% Names that break the rules are refused on reads too.
    ?assertEqual({error, {invalid_name, <<"_x">>}}, barrel:open(<<"_x">>)),
    ?assertEqual({error, {invalid_name, <<"_x">>}}, barrel:barrel_infos(<<"_x">>)),
    ?assertEqual({error, {invalid_name, <<"_x">>}}, barrel:delete_barrel(<<"_x">>)),
    ?assertEqual({error, {invalid_name, abc}}, barrel:barrel_infos(abc)),
    ?assertEqual({error, {bad_arg, barrel}}, barrel:barrel_infos(make_ref())).

bad_params_are_refused() ->
    ?assertMatch({error, {bad_param, _}}, barrel:create_barrel(<<"p1">>, #{revs_limit => 0})),
    ?assertMatch({error, {bad_param, _}}, barrel:create_barrel(<<"p2">>, #{revs_limit => x})),
    ?assertMatch({error, {bad_param, _}}, barrel:create_barrel(<<"p3">>, #{sync => 1})),
    ?assertEqual({error, {bad_param, []}}, barrel:create_barrel(<<"p4">>, [])),
    ?assertEqual({error, not_found}, barrel:open(<<"p1">>)).

talk_params_are_accepted() ->
    ?assertEqual(ok, barrel:create_barrel(<<"mybarrel">>,
                                          #{store_provider => <<"MyLocalRocksdb">>})),
    ok = barrel:create_barrel(<<"b-params">>, #{revs_limit => 5, sync => true}),
    ?assertMatch({ok, #{revs_limit := 5, sync := true}}, barrel:barrel_infos(<<"b-params">>)).

list_is_sorted() ->
    ok = barrel:create_barrel(<<"zz-list">>, #{}),
    ok = barrel:create_barrel(<<"aa-list">>, #{}),
    Names = barrel:list_barrels(),
    ?assertEqual(lists:sort(Names), Names),
    ?assert(lists:member(<<"zz-list">>, Names)),
    ?assert(lists:member(<<"aa-list">>, Names)).

infos_by_name_and_handle() ->
    {Name, B} = barrel_test_setup:fresh_barrel("infos"),
    ?assertMatch({ok, #{name := Name, docs_count := 0, deleted_count := 0, updated_seq := 0,
                        data_size := 0, disk_size := _, revs_limit := 1000, sync := false}},
                 barrel:barrel_infos(Name)),
    {ok, _, Rev} = barrel:save_doc(B, #{<<"id">> => <<"a">>}),
    {ok, _, _} = barrel:save_doc(B, #{<<"id">> => <<"b">>}),
    {ok, _, _} = barrel:delete_doc(B, <<"a">>, Rev),
    {ok, Info} = barrel:barrel_infos(B),
    ?assertMatch(#{docs_count := 1, deleted_count := 1, updated_seq := 3}, Info),
    ?assert(maps:get(data_size, Info) > 0),
    ?assertEqual({error, not_found}, barrel:barrel_infos(<<"nope">>)),
    ?assertEqual({error, {invalid_name, self()}}, barrel:barrel_infos(self())).

closed_handle_is_closed() ->
    {Name, B} = barrel_test_setup:fresh_barrel("closed"),
    {ok, Other} = barrel:open(Name),
    ok = barrel:close(B),
    ?assertEqual({error, closed}, barrel:save_doc(B, #{})),
    ?assertEqual({error, closed}, barrel:fetch_doc(B, <<"a">>)),
    ?assertEqual({error, closed}, barrel:barrel_infos(B)),
    ?assertEqual({error, closed}, barrel:fold_docs(B, fun(_, A) -> {ok, A} end, 0, #{})),
    ?assertMatch({ok, _, _}, barrel:save_doc(Other, #{})).

deleted_barrel_handle_is_not_found() ->
    {Name, B} = barrel_test_setup:fresh_barrel("deleted"),
    {ok, _, _} = barrel:save_doc(B, #{<<"id">> => <<"a">>}),
    ok = barrel:delete_barrel(Name),
    ?assertEqual({error, not_found}, barrel:fetch_doc(B, <<"a">>)),
    ?assertEqual({error, not_found}, barrel:save_doc(B, #{})),
    ?assertEqual({error, not_found}, barrel:open(Name)),
    ?assertNot(lists:member(Name, barrel:list_barrels())).

delete_unknown_is_not_found() ->
    ?assertEqual({error, not_found}, barrel:delete_barrel(<<"never-was">>)).

recreated_barrel_is_empty() ->
    {Name, B} = barrel_test_setup:fresh_barrel("again"),
    {ok, _, _} = barrel:save_doc(B, #{<<"id">> => <<"a">>}),
    ok = barrel:delete_barrel(Name),
    ok = barrel:create_barrel(Name, #{}),
    {ok, B2} = barrel:open(Name),
    ?assertEqual({error, not_found}, barrel:fetch_doc(B2, <<"a">>)),
    ?assertMatch({ok, #{docs_count := 0, updated_seq := 0}}, barrel:barrel_infos(B2)).

compact_gives_a_deleted_barrels_space_back() ->
    {Name, B} = barrel_test_setup:fresh_barrel("compact"),
    Dir = application:get_env(barrel, data_dir, "barrel_data"),
    Size = fun() -> filelib:fold_files(Dir, "", false,
                                       fun(F, Acc) -> Acc + filelib:file_size(F) end, 0)
           end,
    Data = crypto:strong_rand_bytes(16 bsl 20),
    {ok, _, _} = barrel:put_attachment(B, <<"a">>, undefined, <<"f">>, Data),
    ok = barrel:compact(),
    Full = Size(),
    ok = barrel:delete_barrel(Name),
    ok = barrel:compact(),
    %% The 16 MiB content left the disk.
    ?assert(Size() < Full - (12 bsl 20)),
    ?assertEqual({error, not_found}, barrel:open(Name)).

store_info_shows_background_work_until_the_store_rests() ->
    {_Name, B} = barrel_test_setup:fresh_barrel("store-info"),
    Docs = [#{<<"id">> => integer_to_binary(I), <<"n">> => I} || I <- lists:seq(1, 2000)],
    {ok, _} = barrel:save_docs(B, Docs),
    {ok, Info} = barrel:store_info(),
    ?assertEqual(lists:sort([idle, index_queue, flushes_running, compactions_running,
                             flush_pending, compaction_pending, pending_compaction_bytes,
                             memtable_bytes]),
                 lists:sort(maps:keys(Info))),
    #{memtable_bytes := Mem, index_queue := Queued, idle := Idle} = Info,
    ?assert(Mem > 0),
    ?assert(is_integer(Queued) andalso Queued >= 0),
    ?assert(is_boolean(Idle)),
    ?assert(wait_idle(300)),
    ?assertMatch({ok, #{index_queue := 0, flushes_running := 0, compactions_running := 0}},
                 barrel:store_info()),
    ?assertMatch({ok, [_]}, barrel:find(B, {<<"$/n">>, #{equal => 1999}})).

wait_idle(0) ->
    false;
wait_idle(Tries) ->
    case barrel:store_info() of
        {ok, #{idle := true}} -> true;
        {ok, _} -> timer:sleep(100), wait_idle(Tries - 1)
    end.
