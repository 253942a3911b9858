"""Hearth's local OpenAI-compatible HTTP server: other apps use the loaded model (Starlette on uvicorn).

config.ServerConfig (what to listen on, who may call), parsing (request bodies -> validated parameters),
shapes (OpenAI's response objects), catalog (the models a client may name), runner (requests -> engine
host jobs, just-in-time loads, the bounded queue), history (API conversations saved when the user asks),
routes (the ASGI app), service.LocalServer (uvicorn on a thread of its own, clean start and stop).
"""
