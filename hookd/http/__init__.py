"""The HTTP/1.1 shell: an asyncio Protocol driving h11."""
