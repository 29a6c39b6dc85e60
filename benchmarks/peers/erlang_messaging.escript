#!/usr/bin/env escript
%%! +S 2 -noshell
%% The Erlang/OTP peer of the regency messaging suite.
%%
%% Run by benchmarks/peers/erlang_peer.py with two schedulers (+S 2). Line protocol on
%% stdin/stdout: each request "<case> <n>" runs that measurement once and is answered
%% "ok <figure>" or "error <text>". The jobs mirror regency's: plain processes and `!`
%% for one-way and ping-pong, gen_server:call for calls, spawn for spawning, and
%% erlang:memory(processes) for the bytes an idle process (blocked in receive) costs.
-module(erlang_messaging).
-mode(compile).
-behaviour(gen_server).
-export([main/1, init/1, handle_call/3, handle_cast/2]).

main(_) ->
    loop().

loop() ->
    case io:get_line("") of
        eof -> ok;
        {error, _} -> ok;
        Line ->
            case string:lexemes(string:trim(Line), " ") of
                [] -> ok;
                [Case, N] -> answer(Case, list_to_integer(N));
                _ -> io:format("error bad request~n")
            end,
            loop()
    end.

answer(Case, N) ->
    try run(Case, N) of
        Figure -> io:format("ok ~s~n", [float_to_list(float(Figure), [{decimals, 3}])])
    catch
        Class:Reason -> io:format("error ~p:~p~n", [Class, Reason])
    end.

now_ns() -> erlang:monotonic_time(nanosecond).

rate(N, T0, T1) -> N / ((T1 - T0) / 1.0e9).

run("one_way_throughput", N) ->
    Self = self(),
    Receiver = spawn_link(fun() -> sink(N, Self) end),
    T0 = now_ns(),
    send_n(Receiver, 0, N),
    receive {done, T1} -> rate(N, T0, T1) end;
run("ping_pong", N) ->
    Ponger = spawn_link(fun() -> pong(N) end),
    T0 = now_ns(),
    ping(Ponger, 0, N),
    rate(N, T0, now_ns());
run("call_round_trip", N) ->
    {ok, Server} = gen_server:start_link(?MODULE, [], []),
    T0 = now_ns(),
    call_n(Server, 0, N),
    T1 = now_ns(),
    gen_server:cast(Server, stop),
    rate(N, T0, T1);
run("spawn_rate", N) ->
    Self = self(),
    Left = atomics:new(1, []),
    atomics:put(Left, 1, N),
    T0 = now_ns(),
    spawn_n(fun() ->
                case atomics:sub_get(Left, 1, 1) of
                    0 -> Self ! {done, now_ns()};
                    _ -> ok
                end
            end, N),
    receive {done, T1} -> rate(N, T0, T1) end;
run("idle_process_memory", N) ->
    erlang:garbage_collect(),
    Before = erlang:memory(processes),
    Pids = [spawn(fun() -> receive stop -> ok end end) || _ <- lists:seq(1, N)],
    wait_idle(Pids),
    After = erlang:memory(processes),
    [P ! stop || P <- Pids],
    (After - Before) / N;
run(Case, _) ->
    error({unknown_case, Case}).

sink(0, Parent) -> Parent ! {done, now_ns()};
sink(N, Parent) -> receive _ -> sink(N - 1, Parent) end.

send_n(_, N, N) -> ok;
send_n(Pid, I, N) -> Pid ! I, send_n(Pid, I + 1, N).

pong(0) -> ok;
pong(N) -> receive {From, Msg} -> From ! Msg, pong(N - 1) end.

ping(_, N, N) -> ok;
ping(Pid, I, N) ->
    Pid ! {self(), I},
    receive I -> ping(Pid, I + 1, N) end.

call_n(_, N, N) -> ok;
call_n(Server, I, N) -> I = gen_server:call(Server, I), call_n(Server, I + 1, N).

spawn_n(_, 0) -> ok;
spawn_n(Fun, N) -> spawn(Fun), spawn_n(Fun, N - 1).

wait_idle([]) -> ok;
wait_idle([P | Rest]) ->
    case erlang:process_info(P, status) of
        {status, waiting} -> wait_idle(Rest);
        _ -> erlang:yield(), wait_idle([P | Rest])
    end.

init([]) -> {ok, nostate}.
handle_call(Request, _From, State) -> {reply, Request, State}.
handle_cast(stop, State) -> {stop, normal, State}.
