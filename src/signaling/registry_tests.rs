//! The call rules as plain functions: redial, crossed calls, and who is
//! granted a room token by each transition.

use std::collections::BTreeMap;

use serde_json::Value;
use socketioxide::socket::Sid;

use super::*;
use crate::domain::DisplayName;
use crate::policy::Policy;

fn registry() -> Registry {
    Registry::new(Policy::builtin().expect("builtin policy").calls)
}

fn party(n: u8) -> Party {
    Party {
        id: UserId::parse(&format!("6860e2e85547033af89987{n:02x}")).expect("id"),
        name: DisplayName::parse(&format!("User {n}")).expect("name"),
    }
}

fn origin() -> Origin {
    Origin {
        socket: Sid::new(),
        wants_ack: true,
    }
}

fn json(body: &Body) -> Value {
    serde_json::to_value(body).expect("json")
}

fn call_id(body: &Body) -> CallId {
    CallId::parse(json(body)["callId"].as_str().expect("callId")).expect("call id")
}

fn events(out: &Outcome) -> Vec<(&'static str, To, Value)> {
    out.emits
        .iter()
        .map(|e| (e.event, e.to.clone(), json(&e.payload)))
        .collect()
}

#[test]
fn a_redial_replaces_the_ringing_call_for_both_sides() {
    let (a, b) = (party(1), party(2));
    let mut r = registry();
    let first = r
        .initiate_direct(a.clone(), b.clone(), None, origin())
        .expect("rings");
    let old = call_id(&first.ack);
    let _ = r.take_ended();

    let second = r
        .initiate_direct(a.clone(), b.clone(), None, origin())
        .expect("redial rings");
    let new = call_id(&second.ack);
    assert_ne!(old, new);
    assert_eq!(r.len(), 1, "the old call is gone");
    assert_eq!(r.take_ended(), vec![(old, Reason::Replaced)]);

    let ev = events(&second);
    let ended: Vec<_> = ev
        .iter()
        .filter(|(e, _, _)| *e == events::VIDEO_CALL_ENDED)
        .collect();
    assert_eq!(ended.len(), 2);
    for (who, (_, to, body)) in [&a, &b].into_iter().zip(&ended) {
        assert_eq!(*to, To::User(who.id.clone()));
        assert_eq!(body["reason"], "replaced");
        assert_eq!(body["callId"], json!(old));
    }
    let (event, to, body) = ev.last().expect("incoming");
    assert_eq!(*event, events::INCOMING_VIDEO_CALL);
    assert_eq!(*to, To::User(b.id.clone()));
    assert_eq!(body["callId"], json!(new));
    assert!(body.get("jitsi").is_none());
    // The ended events reach clients before the new ring.
    assert_eq!(ev[0].0, events::VIDEO_CALL_ENDED);

    let g = second.grant.expect("the caller's grant");
    assert_eq!((g.call_id, g.user.clone()), (new, a.id.clone()));
    assert!(g.role.caller);
}

#[test]
fn a_redial_may_keep_the_room_but_a_taken_room_changes_nothing() {
    let (a, b, c, d) = (party(1), party(2), party(3), party(4));
    let mut r = registry();
    let room = RoomName::parse("standup").expect("room");
    let first = r
        .initiate_direct(a.clone(), b.clone(), Some(room.clone()), origin())
        .expect("rings");
    r.initiate_direct(
        c,
        d,
        Some(RoomName::parse("other").expect("room")),
        origin(),
    )
    .expect("rings");
    let taken = r
        .initiate_direct(
            a.clone(),
            b.clone(),
            Some(RoomName::parse("OTHER").expect("room")),
            origin(),
        )
        .expect_err("room in use");
    assert_eq!(taken.error.code, ErrorCode::RoomInUse);
    assert_eq!(r.len(), 2, "the first call still rings");
    assert!(r.find(&a.id, Some(call_id(&first.ack)), None).is_ok());

    let again = r
        .initiate_direct(a, b, Some(room.clone()), origin())
        .expect("same room");
    assert_eq!(json(&again.ack)["roomName"], "standup");
    assert_eq!(r.len(), 2);
}

#[test]
fn a_crossed_call_answers_the_ringing_one() {
    let (a, b) = (party(1), party(2));
    let mut r = registry();
    let first = r
        .initiate_direct(a.clone(), b.clone(), None, origin())
        .expect("rings");
    let id = call_id(&first.ack);
    let from = origin();
    let crossed = r
        .initiate_direct(
            b.clone(),
            a.clone(),
            Some(RoomName::parse("mine").expect("room")),
            from,
        )
        .expect("answers");
    assert_eq!(r.len(), 1, "no second call");
    let ack = json(&crossed.ack);
    assert_eq!(ack["callId"], json!(id));
    assert_eq!(ack["crossed"], true);
    assert_eq!(ack["state"], "active");
    assert_eq!(ack["roomName"], json(&first.ack)["roomName"]);

    let accepted: Vec<_> = events(&crossed)
        .into_iter()
        .filter(|(e, _, _)| *e == events::VIDEO_CALL_ACCEPTED)
        .collect();
    let to: Vec<&To> = accepted.iter().map(|(_, t, _)| t).collect();
    assert_eq!(to, vec![&To::Socket(from.socket), &To::User(a.id.clone())]);
    for (_, _, body) in &accepted {
        assert_eq!(body["crossed"], true);
        assert_eq!(body["callId"], json!(id));
        assert!(body.get("jitsi").is_none());
    }
    let g = crossed.grant.expect("B's grant");
    assert_eq!((g.call_id, g.user.clone()), (id, b.id.clone()));
    assert!(!g.role.caller);
}

#[test]
fn only_participants_are_granted_tokens() {
    let (a, b, m) = (party(1), party(2), party(9));
    let mut r = registry();
    let rung = r
        .initiate_direct(a.clone(), b.clone(), None, origin())
        .expect("rings");
    let id = call_id(&rung.ack);
    assert!(r.refresh(&a.id, id).is_ok(), "the caller of a ringing call");
    for who in [&b.id, &m.id] {
        let refused = r.refresh(who, id).expect_err("not yet / never");
        assert_eq!(refused.error.code, ErrorCode::NotFound);
    }
    // A forged accept by a bystander is refused, and grants nothing.
    assert!(r.accept(&m, id, Sid::new()).is_err());
    let accepted = r.accept(&b, id, Sid::new()).expect("accept");
    assert_eq!(
        accepted.grant.map(|g| g.user),
        Some(b.id.clone()),
        "the callee's own"
    );
    let (_, g) = r.refresh(&b.id, id).expect("now a participant");
    assert_eq!(g.user, b.id);
    r.end(&a, id, false, Sid::new()).expect("hang up");
    assert!(
        r.refresh(&a.id, id).is_err(),
        "an ended call grants nothing"
    );

    let declined = r
        .initiate_direct(a.clone(), b.clone(), None, origin())
        .expect("rings");
    let id = call_id(&declined.ack);
    let out = r.reject(&b, id, Sid::new()).expect("decline");
    assert!(out.grant.is_none());
    assert!(r.refresh(&b.id, id).is_err());
}

#[test]
fn group_members_are_granted_their_own_token_when_they_join() {
    let (a, b, c) = (party(1), party(2), party(3));
    let mut r = registry();
    let group = (
        GroupId::parse("507f1f77bcf86cd799439011").expect("group"),
        GroupName::parse("Team").expect("name"),
        Some(b.id.clone()),
    );
    let rung = r
        .initiate_group(
            a.clone(),
            group.clone(),
            vec![b.clone(), c.clone()],
            None,
            origin(),
        )
        .expect("rings");
    let id = call_id(&rung.ack);
    assert!(
        rung.grant
            .as_ref()
            .is_some_and(|g| g.role.caller && g.role.group_call)
    );
    let again = r
        .initiate_group(c.clone(), group, vec![a.clone(), b.clone()], None, origin())
        .expect("already active");
    assert!(
        again.grant.is_none(),
        "not a participant by initiating again"
    );

    let joined = r.accept(&b, id, Sid::new()).expect("join");
    let g = joined.grant.expect("b's grant");
    assert_eq!(g.user, b.id);
    assert!(g.role.group_owner && !g.role.caller);
    assert!(
        r.reject(&c, id, Sid::new())
            .expect("decline")
            .grant
            .is_none()
    );
    assert!(r.refresh(&c.id, id).is_err(), "a decliner gets nothing");
    assert!(r.refresh(&b.id, id).is_ok());
}

fn reload(r: &Registry) -> Registry {
    let records: BTreeMap<RecordKey, Option<String>> =
        r.records().into_iter().map(|(k, v)| (k, Some(v))).collect();
    Registry::from_records(r.policy().clone(), &records).expect("records parse")
}

#[test]
fn records_round_trip_and_diff_to_the_writes_a_transition_made() {
    let (a, b, c) = (party(1), party(2), party(3));
    let mut r = registry();
    let rung = r
        .initiate_direct(a.clone(), b.clone(), None, origin())
        .expect("rings");
    let id = call_id(&rung.ack);
    r.accept(&b, id, Sid::new()).expect("accept");
    let group = (
        GroupId::parse("507f1f77bcf86cd799439011").expect("group"),
        GroupName::parse("Team").expect("name"),
        None,
    );
    r.initiate_group(c.clone(), group, vec![a.clone(), b.clone()], None, origin())
        .expect("group rings");
    assert!(!r.user_went_offline(&a.id).is_empty());

    let loaded = reload(&r);
    assert_eq!(loaded.records(), r.records(), "nothing lost or added");
    assert_eq!(loaded.index_sizes(), r.index_sizes());
    assert_eq!(loaded.counts(), r.counts());

    // Hanging up the direct call deletes its record and its room; a and b
    // keep a record each, for the group call they are invited to.
    let before: BTreeMap<RecordKey, Option<String>> = loaded
        .records()
        .into_iter()
        .map(|(k, v)| (k, Some(v)))
        .collect();
    let mut after = reload(&r);
    after.end(&a, id, false, Sid::new()).expect("hang up");
    let writes = diff(&before, &after.records());
    let deleted: Vec<&RecordKey> = writes
        .iter()
        .filter(|(_, v)| v.is_none())
        .map(|(k, _)| k)
        .collect();
    assert!(deleted.contains(&&RecordKey::Call(id)));
    assert_eq!(
        deleted
            .iter()
            .filter(|k| matches!(k, RecordKey::Room(_)))
            .count(),
        1
    );
    let set: Vec<&RecordKey> = writes
        .iter()
        .filter(|(_, v)| v.is_some())
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        set,
        vec![
            &RecordKey::User(a.id.clone()),
            &RecordKey::User(b.id.clone())
        ],
        "both still in the group call, one call fewer each"
    );
}

#[test]
fn references_to_a_vanished_call_are_dropped_on_load() {
    let (a, b) = (party(1), party(2));
    let mut r = registry();
    let rung = r
        .initiate_direct(a.clone(), b.clone(), None, origin())
        .expect("rings");
    let id = call_id(&rung.ack);
    let mut records: BTreeMap<RecordKey, Option<String>> =
        r.records().into_iter().map(|(k, v)| (k, Some(v))).collect();
    records.insert(RecordKey::Call(id), None);
    let loaded = Registry::from_records(r.policy().clone(), &records).expect("parse");
    assert_eq!(loaded.index_sizes(), (0, 0, 0, 0, 0));
    let writes = diff(&records, &loaded.records());
    assert_eq!(writes.len(), 3, "a, b and the room are removed: {writes:?}");
    assert!(writes.iter().all(|(_, v)| v.is_none()));

    let mut broken = records.clone();
    broken.insert(RecordKey::User(a.id.clone()), Some("{\"calls\":1}".into()));
    assert!(Registry::from_records(r.policy().clone(), &broken).is_err());
}
