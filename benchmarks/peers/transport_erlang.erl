%% The Erlang/OTP peer of the regency transport suite: distribution between two nodes.
%%
%% benchmarks/peers/transport_peers.py starts node A:
%%   erl -name bench_a_<id>@127.0.0.1 -setcookie <random> -noshell +S 2
%%       -eval "<compile this file in memory, load it, transport_erlang:main(Binary)>"
%% main/1 starts node B (another `erl` OS process, same flags) through a port, waits
%% until it answers a ping, loads this module there (code:load_binary over rpc) and
%% starts on B a sink process and an echo gen_server. B halts when A goes down.
%%
%% Line protocol on A's stdin/stdout: "<case> <n>" is answered "ok <f1> <f2> ..." or
%% "error <text>":
%%   one_way_throughput N  -> msg/s: A sends N integers to B's sink with `!`, then
%%                            {sync, self()}, timed until the count comes back;
%%   call_round_trip N     -> N gen_server:call round trips to B's echo server, each
%%                            one's microseconds.
-module(transport_erlang).
-behaviour(gen_server).
-export([main/1, start_b/1, init/1, handle_call/3, handle_cast/2]).

main(Bin) ->
    logger:set_primary_config(level, error),
    try
        B = start_node_b(),
        {Sink, Echo} = setup_b(B, Bin),
        loop(Sink, Echo),
        rpc:cast(B, erlang, halt, [])
    catch
        Class:Reason ->
            io:format("error setup ~p:~p~n", [Class, Reason])
    end,
    erlang:halt(0).

start_node_b() ->
    [_, Host] = string:split(atom_to_list(node()), "@"),
    BName = "bench_b_" ++ os:getpid() ++ "@" ++ Host,
    Erl = os:find_executable("erl"),
    %% -noinput and its own stdio (the port's pipes): B must never read A's stdin.
    Args = ["-name", BName, "-setcookie", atom_to_list(erlang:get_cookie()),
            "-noinput", "+S", "2"],
    _Port = open_port({spawn_executable, Erl}, [{args, Args}]),
    B = list_to_atom(BName),
    wait_pong(B, 500),
    B.

wait_pong(B, 0) -> error({no_answer_from, B});
wait_pong(B, Tries) ->
    case net_adm:ping(B) of
        pong -> ok;
        pang -> timer:sleep(20), wait_pong(B, Tries - 1)
    end.

setup_b(B, Bin) ->
    {module, ?MODULE} = rpc:call(B, code, load_binary, [?MODULE, "transport_erlang.erl", Bin]),
    {ok, Sink, Echo} = rpc:call(B, ?MODULE, start_b, [node()]),
    {Sink, Echo}.

%% On node B.
start_b(A) ->
    logger:set_primary_config(level, error),
    spawn(fun() -> monitor_node(A, true), receive {nodedown, A} -> erlang:halt(0) end end),
    Sink = spawn(fun() -> sink(0) end),
    {ok, Echo} = gen_server:start(?MODULE, [], []),
    {ok, Sink, Echo}.

sink(Count) ->
    receive
        {sync, From} -> From ! {count, Count}, sink(0);
        _ -> sink(Count + 1)
    end.

loop(Sink, Echo) ->
    case io:get_line("") of
        eof -> ok;
        {error, _} -> ok;
        Line ->
            case string:lexemes(string:trim(Line), " ") of
                [] -> ok;
                [Case, N] -> answer(Case, list_to_integer(N), Sink, Echo);
                _ -> io:format("error bad request~n")
            end,
            loop(Sink, Echo)
    end.

answer(Case, N, Sink, Echo) ->
    try run(Case, N, Sink, Echo) of
        Figures ->
            Text = [[" ", float_to_list(float(F), [{decimals, 3}])] || F <- Figures],
            io:format("ok~s~n", [lists:flatten(Text)])
    catch
        Class:Reason -> io:format("error ~p:~p~n", [Class, Reason])
    end.

now_ns() -> erlang:monotonic_time(nanosecond).

run("one_way_throughput", N, Sink, _) ->
    T0 = now_ns(),
    send_n(Sink, 0, N),
    Sink ! {sync, self()},
    receive {count, N} -> ok end,
    [N / ((now_ns() - T0) / 1.0e9)];
run("call_round_trip", N, _, Echo) ->
    calls(Echo, 0, N, []);
run(Case, _, _, _) ->
    error({unknown_case, Case}).

send_n(_, N, N) -> ok;
send_n(Pid, I, N) -> Pid ! I, send_n(Pid, I + 1, N).

calls(_, N, N, Acc) -> lists:reverse(Acc);
calls(Echo, I, N, Acc) ->
    T0 = now_ns(),
    I = gen_server:call(Echo, I),
    calls(Echo, I + 1, N, [(now_ns() - T0) / 1000 | Acc]).

init([]) -> {ok, nostate}.
handle_call(Request, _From, State) -> {reply, Request, State}.
handle_cast(_, State) -> {noreply, State}.
