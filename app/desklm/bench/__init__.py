"""Every benchmark DeskLM prints (`desklm bench`): the engine, the window, the API, a remote
server, long chats, search. Above ui/ and server/: nothing imports it but the CLI."""
