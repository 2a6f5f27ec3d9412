//! The membership commands, `invite`, `allow`, `deny` and `members`: who may write to the
//! network (see `crate::trust`).

use crate::api::client::ApiClient;
use crate::api::json::{Member, Role};

use super::{output, Error, Result};

/// `dfs invite [--admin] [--json]`: a one-line ticket for `dfs node --join`.
pub(super) async fn invite(api: &ApiClient, admin: bool, json: bool) -> Result<()> {
    let invite = api.invite(admin).await?;
    if json {
        return output::json(&invite);
    }
    println!("{}", invite.ticket);
    // On stderr: `T=$(dfs invite)` still captures the ticket alone.
    let role = match invite.role {
        Some(Role::Admin) => "admin",
        _ => "writer",
    };
    eprintln!(
        "invited {} as {role}: the ticket is for one machine; `dfs deny {}` revokes it, used or not",
        invite.peer_id, invite.peer_id
    );
    Ok(())
}

fn check_peer(peer: &str) -> Result<()> {
    peer.parse::<libp2p::PeerId>().map(|_| ()).map_err(|_| {
        Error::Usage(format!(
            "{peer:?} is not a peer id (base58, as `dfs id` on that node prints it)"
        ))
    })
}

/// `dfs allow PEER_ID [--admin] [--json]`.
pub(super) async fn allow(api: &ApiClient, peer: &str, admin: bool, json: bool) -> Result<()> {
    check_peer(peer)?;
    let role = if admin { Role::Admin } else { Role::Writer };
    let member = api.allow(peer, role).await?;
    if json {
        return output::json(&member);
    }
    println!("{} is now {}", member.peer_id, describe(&member));
    Ok(())
}

/// `dfs deny PEER_ID [--json]`.
pub(super) async fn deny(api: &ApiClient, peer: &str, json: bool) -> Result<()> {
    check_peer(peer)?;
    let member = api.deny(peer).await?;
    if json {
        return output::json(&member);
    }
    println!(
        "{} can no longer write; {}",
        member.peer_id,
        match member.cutoff {
            Some(n) if n > 0 => format!("its records up to #{n} stay"),
            _ => "it had written nothing this node has seen".into(),
        }
    );
    Ok(())
}

/// `dfs members [--json]`.
pub(super) async fn members(api: &ApiClient, json: bool) -> Result<()> {
    let members = api.members().await?;
    if json {
        return output::json(&members);
    }
    for m in &members {
        println!("{}  {}", m.peer_id, describe(m));
    }
    Ok(())
}

fn describe(m: &Member) -> String {
    let mut out = role(m);
    if m.failed_proofs > 0 {
        out += &format!(
            ", failed {} proofs of possession (says it keeps files it does not hold)",
            m.failed_proofs
        );
    }
    if m.equivocated {
        out += ", signed two records under one number (revoke it: `dfs deny`)";
    }
    out
}

fn role(m: &Member) -> String {
    match (m.owner, m.role) {
        (true, _) => "owner".into(),
        (false, Role::Admin) => "admin".into(),
        (false, Role::Writer) => "writer".into(),
        (false, Role::Reader) => match m.cutoff {
            Some(n) => format!("revoked (records up to #{n} stay)"),
            None => "reader".into(),
        },
    }
}
