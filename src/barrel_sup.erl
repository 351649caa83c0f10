%% @private
%% @doc Top supervisor of the `barrel' application. Listeners and replications
%% are started under it.
-module(barrel_sup).
-behaviour(supervisor).

-export([start_link/0, init/1]).

start_link() ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, []).

init([]) ->
    {ok, {#{strategy => one_for_one, intensity => 10, period => 10},
          [barrel_listener:child_spec(), barrel_http:child_spec(),
           barrel_replicator:child_spec()]}}.
