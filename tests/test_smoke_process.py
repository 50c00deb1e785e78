import mkv
from tests.processes import ServerProcess


async def test_process_roundtrip(server_process: ServerProcess) -> None:
    async with mkv.Client.connect(server_process.data_addr) as client:
        await client.upsert({b"k": b"v"})
        assert await client.get(b"k") == b"v"
    assert await server_process.stop() == 0


async def test_inprocess(mkv_client: mkv.Client) -> None:
    await mkv_client.upsert({b"k": b"v"})
    assert await mkv_client.get(b"k") == b"v"
