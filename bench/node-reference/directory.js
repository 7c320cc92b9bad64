// The users and groups of a callgate seed file (README "Seed file"), in memory,
// with the tiny slice of a Mongoose model the seed's handlers call:
// `Group.find({ members: userId })`.
'use strict';

const fs = require('node:fs');

/**
 * Loads a seed file.
 * @param {string} path
 * @returns {{ usersByName: Map<string, object>, Group: { find(q: { members: string }): Promise<object[]> } }}
 */
function loadDirectory(path) {
  const seed = JSON.parse(fs.readFileSync(path, 'utf8'));
  const usersByName = new Map();
  for (const user of seed.users ?? []) {
    usersByName.set(user.username, user);
  }
  const groupsByMember = new Map();
  for (const group of seed.groups ?? []) {
    const doc = { _id: group.id, name: group.name, members: group.members ?? [] };
    for (const member of doc.members) {
      if (!groupsByMember.has(member)) groupsByMember.set(member, []);
      groupsByMember.get(member).push(doc);
    }
  }
  const Group = {
    async find({ members }) {
      return groupsByMember.get(members) ?? [];
    },
  };
  return { usersByName, Group };
}

module.exports = { loadDirectory };
