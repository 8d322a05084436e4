"""`Api`: calls the sync or the asyncio client the same way, so each behaviour is tested once for both."""

from __future__ import annotations

import inspect
from typing import Any

from mimo_client import AsyncMimoClient, MimoClient


class Api:
    """Calls either client the same way, so each behaviour is tested once for both."""

    def __init__(self, client: MimoClient | AsyncMimoClient) -> None:
        self.client = client
        self.is_async = isinstance(client, AsyncMimoClient)

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        result = getattr(self.client, method)(*args, **kwargs)
        return await result if inspect.isawaitable(result) else result

    async def collect(self, method: str, *args: Any, **kwargs: Any) -> list[Any]:
        items, error = await self.collect_until_error(method, *args, **kwargs)
        if error is not None:
            raise error
        return items

    async def collect_until_error(self, method: str, *args: Any, **kwargs: Any) -> tuple[list[Any], Exception | None]:
        """The items a stream gave before it ended, and the error it ended with (or None)."""
        items: list[Any] = []
        stream = getattr(self.client, method)(*args, **kwargs)
        try:
            if self.is_async:
                async for item in stream:
                    items.append(item)
            else:
                for item in stream:
                    items.append(item)
        except Exception as e:
            return items, e
        return items, None

    async def first_then_stop(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Take a stream's first item, then walk away the way a user would (closing the iterator)."""
        stream = getattr(self.client, method)(*args, **kwargs)
        if self.is_async:
            first = await anext(stream)
            await stream.aclose()
        else:
            first = next(stream)
            stream.close()
        return first

    async def close(self) -> None:
        result = self.client.close()
        if inspect.isawaitable(result):
            await result
