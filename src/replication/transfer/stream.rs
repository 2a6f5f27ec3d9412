//! A worker of a transfer: one `/dfs/chunks/1` stream to one peer with chunks requested in a
//! pipeline, each chunk verified against its hash and written durably on a blocking thread.

use super::*;

/// One peer's share of a transfer: a stream with up to `per_peer` chunks requested at once.
pub(super) async fn worker(
    shared: Arc<Shared>,
    peer: PeerId,
    mut lacking: HashSet<Hash>,
) -> WorkerEnd {
    let before = shared.written.load(Ordering::Relaxed);
    let mut writes = FuturesUnordered::new();
    let mut attempt = 0;
    let mut result = loop {
        let mut outstanding = VecDeque::new();
        let result =
            stream_chunks(&shared, peer, &mut lacking, &mut outstanding, &mut writes).await;
        // What was asked for but not received goes back to the queue for the other workers.
        shared.requeue(outstanding.into_iter().rev());
        // A stream closed before its first reply is what a busy responder does (or a
        // libp2p-stream acceptor that had no room for it): try again after a short pause.
        match result {
            Err(WorkerError::Peer(PeerError::Closed)) if attempt < MAX_REOPENS => {
                attempt += 1;
                tokio::time::sleep(REOPEN_PAUSE * attempt).await;
            }
            other => break other,
        }
    };
    while let Some(written) = writes.next().await {
        let failed = settle(&shared, peer, written);
        if result.is_ok() {
            if let Err(e) = failed {
                result = Err(e);
            }
        }
    }
    WorkerEnd {
        peer,
        // Other workers write at the same time: this counts theirs too, which only matters
        // for "did anything move", the one use of it.
        wrote: shared.written.load(Ordering::Relaxed) - before,
        lacking,
        result,
    }
}

/// Counts a written chunk, or turns a failed write into the worker's error.
pub(super) fn settle(
    shared: &Shared,
    peer: PeerId,
    written: (Hash, Written),
) -> Result<(), WorkerError> {
    match written.1 {
        Written::Ok => {
            let n = shared.written.fetch_add(1, Ordering::Relaxed) + 1;
            shared.inner.chunks_fetched.fetch_add(1, Ordering::Relaxed);
            let len = shared.lengths.expected(&written.0) as u64;
            shared.bytes.fetch_add(len, Ordering::Relaxed);
            shared.inner.metrics.fetched_bytes.inc_by(len);
            shared.sources.lock().expect("sources lock").insert(peer);
            let _ = shared.progress.send(Progress::Running { chunks: n });
            Ok(())
        }
        Written::BadChunk(hash) => {
            shared.requeue([hash]);
            Err(WorkerError::Peer(PeerError::BadChunk(hash)))
        }
        Written::Fatal(e) => {
            shared.requeue([written.0]);
            Err(WorkerError::Fatal(e))
        }
    }
}

pub(super) type PendingWrites = FuturesUnordered<BoxFuture<'static, (Hash, Written)>>;

pub(super) async fn stream_chunks(
    shared: &Arc<Shared>,
    peer: PeerId,
    lacking: &mut HashSet<Hash>,
    outstanding: &mut VecDeque<Hash>,
    writes: &mut PendingWrites,
) -> Result<(), WorkerError> {
    let per_peer = shared.inner.per_peer;
    let first = shared.take(per_peer.min(chunks::MAX_HASHES_PER_REQUEST), lacking);
    if first.is_empty() {
        return Ok(());
    }
    // Taken first, so that workers started together do not all open streams for one chunk;
    // if the stream does not open, they go back to the queue (see `worker`). Opening is
    // bounded: a peer that left (libp2p-stream would dial it) must not hold the transfer.
    outstanding.extend(first.iter().copied());
    let open = shared.inner.network.open_stream(peer, chunks::PROTOCOL);
    let mut stream = tokio::time::timeout(chunks::REPLY_TIMEOUT, open)
        .await
        .map_err(|_| PeerError::Timeout(chunks::REPLY_TIMEOUT))?
        .map_err(PeerError::from)?;
    let mut replied = false;
    let mut misses = 0u32;
    chunks::write_request(&mut stream, &first)
        .await
        .map_err(|e| {
            if is_closed(&e) {
                PeerError::Closed
            } else {
                PeerError::Frame(e.into())
            }
        })?;
    loop {
        // Keep the pipeline full: ask for more while fewer than `per_peer` are outstanding.
        let room = per_peer.saturating_sub(outstanding.len());
        if room >= per_peer / 2 || outstanding.is_empty() {
            let more = shared.take(room.min(chunks::MAX_HASHES_PER_REQUEST), lacking);
            if !more.is_empty() {
                outstanding.extend(more.iter().copied());
                chunks::write_request(&mut stream, &more)
                    .await
                    .map_err(|e| PeerError::Frame(e.into()))?;
            }
        }
        // Reap the writes that are done, without waiting.
        while let Some(Some(written)) = writes.next().now_or_never() {
            settle(shared, peer, written)?;
        }
        let Some(&hash) = outstanding.front() else {
            break;
        };
        let reply = tokio::time::timeout(chunks::REPLY_TIMEOUT, chunks::read_reply(&mut stream))
            .await
            .map_err(|_| PeerError::Timeout(chunks::REPLY_TIMEOUT))?
            .map_err(|e| match e {
                chunks::FrameError::Io(ref io) if !replied && is_closed(io) => PeerError::Closed,
                e => PeerError::Frame(e),
            })?;
        replied = true;
        match reply {
            chunks::Reply::Chunk { len } => {
                // A free buffer, else the one of this worker's next finished write; waiting in
                // the pool's queue is only safe while this worker holds none.
                let mut buf = loop {
                    if let Some(b) = shared.inner.buffers.try_get() {
                        break b;
                    }
                    match writes.next().await {
                        Some(written) => settle(shared, peer, written)?,
                        None => break shared.inner.buffers.get().await,
                    }
                };
                tokio::time::timeout(chunks::REPLY_TIMEOUT, stream.read_exact(buf.fill(len)))
                    .await
                    .map_err(|_| PeerError::Timeout(chunks::REPLY_TIMEOUT))?
                    .map_err(|e| PeerError::Frame(e.into()))?;
                outstanding.pop_front();
                misses = 0;
                let expected = shared.lengths.expected(&hash);
                let store = shared.inner.store.clone();
                let tasks = shared.inner.tasks.clone();
                writes.push(
                    async move {
                        let done = tasks
                            .blocking(move || write_chunk(&store, hash, buf, expected))
                            .await
                            .unwrap_or_else(|e| Written::Fatal(e.into()));
                        (hash, done)
                    }
                    .boxed(),
                );
            }
            chunks::Reply::NotFound => {
                outstanding.pop_front();
                lacking.insert(hash);
                shared.requeue([hash]);
                misses += 1;
                if misses >= MAX_MISSES {
                    return Err(PeerError::NotFound.into());
                }
            }
            chunks::Reply::Error { message } => return Err(PeerError::Refused(message).into()),
        }
    }
    let _ = stream.close().await;
    tracing::trace!(%peer, key = %shared.key, "chunk stream done");
    Ok(())
}

/// True for the ways a stream ends when its other side dropped or reset it.
pub(super) fn is_closed(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
    )
}

/// Verifies a received chunk (hash, then expected length) and writes it durably.
pub(super) fn write_chunk(store: &Store, hash: Hash, buf: Buf, expected: usize) -> Written {
    let data = &buf.data;
    if data.len() != expected {
        // Honest bytes of the wrong length mean the content's author described them wrong:
        // every peer would send the same, so the content is unusable.
        return if Hash::of(data) == hash {
            Written::Fatal(TransferError::SizeMismatch {
                hash,
                len: data.len(),
            })
        } else {
            Written::BadChunk(hash)
        };
    }
    match store.write_chunk(&hash, data) {
        Ok(()) => Written::Ok,
        Err(StoreError::BadChunk(_)) => Written::BadChunk(hash),
        Err(e) => Written::Fatal(e.into()),
    }
}
