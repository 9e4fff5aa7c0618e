"""Discrete-event sketch (asyncio, time scaled by SCALE) of a day's audit under the batch bench's
caps and latencies, comparing run shapes: asset-by-asset runs (today: all details, then all
transcriptions, then all LLM steps, per run of 50) against a per-fiche pipeline inside each run.
Not a benchmark of the code: it bounds what a run-granularity change can gain (issue 9 §2).

    python -m bench.pipeline_sim     # args: (fiches, per_run, max_runs, fiche_concurrency, pipelined[, run_start_s])
"""
import asyncio
import time

SCALE = 0.04  # 1 simulated second = 40 ms
async def sim(n_fiches, per_run, max_runs, fiche_conc, pipelined, run_start=8.0):
    crm=asyncio.Semaphore(3); stt=asyncio.Semaphore(4); llm=asyncio.Semaphore(16)
    runs=asyncio.Semaphore(max_runs)
    async def details(f):
        async with crm: await asyncio.sleep(0.1*SCALE)
    async def transcribe(f):
        async def rec():
            async with stt: await asyncio.sleep(1.0*SCALE)
        await asyncio.gather(rec(), rec())
    async def audit(f):
        sem=asyncio.Semaphore(10)
        async def step():
            async with sem:
                async with llm: await asyncio.sleep(0.5*SCALE)
        await asyncio.gather(*[step() for _ in range(18)])
    async def gather_bounded(items, fn):
        s=asyncio.Semaphore(fiche_conc)
        async def one(i):
            async with s: await fn(i)
        await asyncio.gather(*[one(i) for i in items])
    async def run(chunk):
        async with runs:
            await asyncio.sleep(run_start*SCALE)
            await gather_bounded(chunk, details)
            if pipelined:
                async def both(f):
                    await transcribe(f); await audit(f)
                await gather_bounded(chunk, both)
            else:
                await gather_bounded(chunk, transcribe)
                await gather_bounded(chunk, audit)
    t0=time.monotonic()
    chunks=[list(range(i,min(i+per_run,n_fiches))) for i in range(0,n_fiches,per_run)]
    await asyncio.gather(*[run(c) for c in chunks])
    return (time.monotonic()-t0)/SCALE
if __name__ == "__main__":
  for args in [(200,50,4,8,False),(200,50,4,16,False),(200,25,4,8,False),(200,10,4,8,False),(200,10,8,8,False),(200,50,4,8,True),(200,50,4,4,True),(200,25,4,8,True),(200,50,2,8,True)]:
      print(args, round(asyncio.run(sim(*args)), 1))
