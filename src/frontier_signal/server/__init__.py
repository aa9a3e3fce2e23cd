"""The HTTP server: FastAPI app factory, auth, error mapping and one router per API face.

Routes are thin: they validate wire schemas and call the service; they never touch torch.
"""
