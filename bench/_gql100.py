import asyncio, sys, os
sys.path.insert(0, os.path.dirname(__file__))
from _server import running_server
from ingest import throughput
async def main():
    with running_server() as server:
        print("PID", server.pid, flush=True)
        for _ in range(int(sys.argv[2]) if len(sys.argv) > 2 else 3):
            await asyncio.to_thread(server.settle)
            print(sys.argv[1], await throughput(server.url, server.api_key, via=sys.argv[1], batch=100, total=20000, concurrency=4), flush=True)
asyncio.run(main())
