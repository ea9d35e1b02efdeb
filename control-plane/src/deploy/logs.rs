//! An API's logs: the lines of all its instances, gathered from their agents; with
//! follow, new lines as they come until the caller goes away.
use std::{collections::HashMap, pin::Pin};

use futures_util::{Stream, StreamExt, stream::select_all};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use souq_proto::agent::{LogLine, LogsRequest};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use uuid::Uuid;

use crate::{
    entity::{instances, nodes},
    error::{Error, Result},
    nodes::Nodes,
};

/// Lines sent first when the caller names no number.
pub const DEFAULT_TAIL: u32 = 100;
/// Most lines sent first.
pub const MAX_TAIL: u32 = 1000;

type Lines = Pin<Box<dyn Stream<Item = Result<LogLine, Status>> + Send>>;

/// The log stream of API `api_id` (ownership already checked), read from the agents of
/// `fleet`.
pub(crate) async fn stream(fleet: &Nodes, api_id: Uuid, tail: u32, follow: bool) -> Result<ReceiverStream<Result<LogLine, Status>>> {
    let tail = if tail == 0 { DEFAULT_TAIL } else { tail.min(MAX_TAIL) };
    let rows = instances::Entity::find().filter(instances::Column::ApiId.eq(api_id)).all(&fleet.db).await?;
    let mut by_node: HashMap<Uuid, Vec<String>> = HashMap::new();
    for r in rows {
        by_node.entry(r.node_id).or_default().push(r.id);
    }
    let nodes = nodes::Entity::find().filter(nodes::Column::Id.is_in(by_node.keys().copied())).all(&fleet.db).await?;
    let mut sources: Vec<Lines> = Vec::new();
    for n in nodes {
        let Some(ids) = by_node.remove(&n.id) else { continue };
        let mut call = tonic::Request::new(LogsRequest { instance_ids: ids, tail, follow });
        if !follow {
            call.set_timeout(std::time::Duration::from_secs(10));
        }
        fleet.agents.authorize(&mut call);
        let mut client = fleet.agents.get(&n.address).map_err(Error::Internal)?;
        match client.logs(call).await {
            Ok(s) => sources.push(Box::pin(s.into_inner())),
            Err(e) => tracing::warn!(node = %n.name, error = %e.message(), "could not read an agent's logs"),
        }
    }
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    tokio::spawn(async move {
        let mut merged = select_all(sources);
        if !follow {
            // One answer in time order: the last `tail` lines of all instances together.
            let mut lines: Vec<LogLine> = Vec::new();
            while let Some(Ok(l)) = merged.next().await {
                lines.push(l);
            }
            lines.sort_by_key(|l| l.ts_ms);
            let skip = lines.len().saturating_sub(usize::try_from(tail).unwrap_or(usize::MAX));
            for l in lines.into_iter().skip(skip) {
                if tx.send(Ok(l)).await.is_err() {
                    return;
                }
            }
            return;
        }
        loop {
            tokio::select! {
                next = merged.next() => match next {
                    Some(Ok(l)) => if tx.send(Ok(l)).await.is_err() { return },
                    Some(Err(_)) => {}
                    None => return,
                },
                () = tx.closed() => return,
            }
        }
    });
    Ok(ReceiverStream::new(rx))
}
