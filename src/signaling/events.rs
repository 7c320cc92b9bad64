//! Event names: the seed frontend's contract, plus callgate's additions. Every
//! handler and emit uses these constants, never a string literal.

// Client → server (the seed frontend's events).
/// `userOnline(userId)`.
pub const USER_ONLINE: &str = "userOnline";
/// `joinVideoRoom({userId})`.
pub const JOIN_VIDEO_ROOM: &str = "joinVideoRoom";
/// `joinGroup(groupId)`.
pub const JOIN_GROUP: &str = "joinGroup";
/// `leaveGroup(groupId)`.
pub const LEAVE_GROUP: &str = "leaveGroup";
/// `groupCreated({groupId, memberIds})`.
pub const GROUP_CREATED: &str = "groupCreated";
/// `initiateVideoCall({receiverId, roomName?, ...})`.
pub const INITIATE_VIDEO_CALL: &str = "initiateVideoCall";
/// `initiateGroupVideoCall({groupId, roomName?})`.
pub const INITIATE_GROUP_VIDEO_CALL: &str = "initiateGroupVideoCall";
/// `acceptVideoCall({callId? | roomName?})`.
pub const ACCEPT_VIDEO_CALL: &str = "acceptVideoCall";
/// `rejectVideoCall({callId? | roomName?})`.
pub const REJECT_VIDEO_CALL: &str = "rejectVideoCall";
/// `endVideoCall({callId? | roomName?, endForAll?})`.
pub const END_VIDEO_CALL: &str = "endVideoCall";
/// `refreshJitsiToken({callId})` (callgate's addition).
pub const REFRESH_JITSI_TOKEN: &str = "refreshJitsiToken";

/// Every client event callgate handles.
pub const CLIENT_EVENTS: [&str; 11] = [
    USER_ONLINE,
    JOIN_VIDEO_ROOM,
    JOIN_GROUP,
    LEAVE_GROUP,
    GROUP_CREATED,
    INITIATE_VIDEO_CALL,
    INITIATE_GROUP_VIDEO_CALL,
    ACCEPT_VIDEO_CALL,
    REJECT_VIDEO_CALL,
    END_VIDEO_CALL,
    REFRESH_JITSI_TOKEN,
];

// Server → client (the seed frontend's events).
/// To each callee socket when a call rings.
pub const INCOMING_VIDEO_CALL: &str = "incomingVideoCall";
/// To the caller when the call is accepted.
pub const VIDEO_CALL_ACCEPTED: &str = "videoCallAccepted";
/// To the caller when the call is declined.
pub const VIDEO_CALL_REJECTED: &str = "videoCallRejected";
/// To participants when a call ends for them.
pub const VIDEO_CALL_ENDED: &str = "videoCallEnded";

// Server → client (callgate's additions).
/// To the initiating socket: the call record, with its `callId`.
pub const VIDEO_CALL_RINGING: &str = "videoCallRinging";
/// To the sending socket when a call event fails.
pub const VIDEO_CALL_FAILED: &str = "videoCallFailed";
/// To the callee when a call rang out unanswered.
pub const VIDEO_CALL_MISSED: &str = "videoCallMissed";
/// To group call participants: someone joined.
pub const GROUP_CALL_PARTICIPANT_JOINED: &str = "groupCallParticipantJoined";
/// To a group call's caller: an invitee declined.
pub const GROUP_CALL_PARTICIPANT_DECLINED: &str = "groupCallParticipantDeclined";
/// To group call participants: someone left.
pub const GROUP_CALL_PARTICIPANT_LEFT: &str = "groupCallParticipantLeft";
/// To the acting socket only, when it asked for no ack: its own room token
/// (`{callId, roomName, jitsi: {domain, room, jwt}}`).
pub const JITSI_TOKEN: &str = "jitsiToken";
/// On connect, to a user who has live calls.
pub const ACTIVE_VIDEO_CALLS: &str = "activeVideoCalls";
/// To a socket whose token expired, just before it is disconnected.
pub const TOKEN_EXPIRED: &str = "tokenExpired";
/// To every socket when the server shuts down.
pub const SERVER_SHUTDOWN: &str = "serverShutdown";
/// To the sending socket when a non-call event fails.
pub const ERROR: &str = "error";
