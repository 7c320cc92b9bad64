#!/usr/bin/env python3
"""Loads a callgate-loadgen seed (JSON) into MongoDB as a Mongoose chat app
would have written it, and prints MongoDB's operation counters.

    mongo-seed.py load URI DATABASE SEED.json   # users as Mongoose documents
    mongo-seed.py counters URI                  # serverStatus opcounters, as JSON

Needs pymongo (the SecantusDB virtualenv has it). Used by bench/compare.sh.
"""
import datetime
import json
import sys

import pymongo
from bson import ObjectId


def load(uri, database, seed_path):
    with open(seed_path) as f:
        seed = json.load(f)
    now = datetime.datetime.now(datetime.timezone.utc)
    client = pymongo.MongoClient(uri)
    db = client[database]
    db.drop_collection("users")
    db.drop_collection("groups")
    docs = [
        {
            "_id": ObjectId(u["id"]) if len(u["id"]) == 24 else u["id"],
            "username": u["username"],
            "email": f'{u["username"]}@example.test',
            "displayName": u.get("displayName", u["username"]),
            "passwordHash": u["passwordHash"],
            "createdAt": now,
            "__v": 0,
        }
        for u in seed["users"]
    ]
    for i in range(0, len(docs), 1000):
        db.users.insert_many(docs[i : i + 1000], ordered=False)
    db.users.create_index("username", unique=True)
    print(f"loaded {len(docs)} users into {database}.users", file=sys.stderr)


def counters(uri):
    client = pymongo.MongoClient(uri)
    print(json.dumps(client.admin.command("serverStatus")["opcounters"]))


if __name__ == "__main__":
    if sys.argv[1:2] == ["load"] and len(sys.argv) == 5:
        load(*sys.argv[2:])
    elif sys.argv[1:2] == ["counters"] and len(sys.argv) == 3:
        counters(sys.argv[2])
    else:
        sys.exit(__doc__)
