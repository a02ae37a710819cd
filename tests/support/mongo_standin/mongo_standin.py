"""A MongoDB wire-protocol stand-in for tests: mockupdb speaks the protocol (OP_MSG and the
legacy OP_QUERY handshake), this file keeps an in-memory store and answers exactly the
commands the Rust driver and kombu's MongoDB transport (via pymongo) send.

Prints its port on stdout, then serves until killed. Commands: hello/isMaster, ping,
buildInfo, endSessions, insert, find, findAndModify, update, delete, aggregate ($match +
$group count), count, createIndexes, create, listCollections, drop. Query operators:
equality, $and, $or, $not, $gt, $gte, $lt, $lte, $ne, $eq, $exists, $in.
"""
import sys
import threading
from datetime import datetime

from bson import ObjectId
from mockupdb import Matcher, MockupDB

LOCK = threading.Lock()
STORE = {}  # "db.collection" -> list of documents, in insertion order
MISSING = object()


def collection(db, name):
    return STORE.setdefault(f"{db}.{name}", [])


def compare(op, value, arg):
    if op == "$exists":
        return (value is not MISSING) == bool(arg)
    if op == "$not":
        return not matches_value(value, arg)
    if op == "$in":
        return value is not MISSING and value in arg
    if op == "$eq":
        return value is not MISSING and value == arg
    if op == "$ne":
        return value is MISSING or value != arg
    if value is MISSING or value is None:
        return False
    try:
        return {"$gt": value > arg, "$gte": value >= arg, "$lt": value < arg,
                "$lte": value <= arg}[op]
    except TypeError:
        return False


def matches_value(value, cond):
    if isinstance(cond, dict) and cond and all(k.startswith("$") for k in cond):
        return all(compare(op, value, arg) for op, arg in cond.items())
    return value is not MISSING and value == cond


def matches(doc, query):
    for key, cond in (query or {}).items():
        if key == "$and":
            if not all(matches(doc, q) for q in cond):
                return False
        elif key == "$or":
            if not any(matches(doc, q) for q in cond):
                return False
        elif not matches_value(doc.get(key, MISSING), cond):
            return False
    return True


def sort_key(spec):
    def key(doc):
        out = []
        for field, direction in (spec or {}).items():
            v = doc.get(field)
            k = (0, 0) if v is None else (1, v.binary if isinstance(v, ObjectId) else v)
            out.append(k if direction >= 0 else Reverse(k))
        return out
    return key


class Reverse:
    def __init__(self, v):
        self.v = v

    def __lt__(self, other):
        return other.v < self.v

    def __eq__(self, other):
        return self.v == other.v


def select(docs, query, sort=None):
    found = [d for d in docs if matches(d, query)]
    if sort:
        found.sort(key=sort_key(sort))
    return found


def apply_update(doc, update):
    if not any(k.startswith("$") for k in update):
        keep = doc.get("_id")
        doc.clear()
        doc.update(update)
        doc.setdefault("_id", keep)
        return
    for op, fields in update.items():
        for field, value in fields.items():
            if op == "$set":
                doc[field] = value
            elif op == "$unset":
                doc.pop(field, None)
            elif op == "$inc":
                doc[field] = doc.get(field, 0) + value
            elif op == "$setOnInsert":
                pass
            else:
                raise ValueError(f"unsupported update operator {op}")


def upsert_doc(query, update):
    doc = {k: v for k, v in (query or {}).items() if not k.startswith("$") and not isinstance(v, dict)}
    apply_update(doc, update)
    for field, value in update.get("$setOnInsert", {}).items():
        doc[field] = value
    doc.setdefault("_id", ObjectId())
    return doc


def handle(db, cmd, doc):
    if cmd in ("hello", "ismaster", "isMaster"):
        return {"ismaster": True, "isWritablePrimary": True, "helloOk": True,
                "maxWireVersion": 17, "minWireVersion": 0, "maxBsonObjectSize": 16777216,
                "maxMessageSizeBytes": 48000000, "maxWriteBatchSize": 100000,
                "localTime": datetime.utcnow(), "logicalSessionTimeoutMinutes": 30,
                "connectionId": 1}
    if cmd in ("ping", "endSessions", "killCursors", "createIndexes", "create", "drop",
               "dropIndexes"):
        if cmd == "create":
            collection(db, doc["create"])
        return {}
    if cmd == "buildInfo" or cmd == "buildinfo":
        return {"version": "6.0.0", "versionArray": [6, 0, 0, 0]}
    if cmd == "listCollections":
        names = [k.split(".", 1)[1] for k in STORE if k.startswith(db + ".")]
        batch = [{"name": n, "type": "collection", "options": {}} for n in names]
        return {"cursor": {"id": 0, "ns": f"{db}.$cmd.listCollections", "firstBatch": batch}}
    name = doc.get(cmd)
    docs = collection(db, name) if isinstance(name, str) else []
    ns = f"{db}.{name}"
    if cmd == "insert":
        for d in doc["documents"]:
            d.setdefault("_id", ObjectId())
            docs.append(dict(d))
        return {"n": len(doc["documents"])}
    if cmd == "find":
        found = select(docs, doc.get("filter"), doc.get("sort"))
        found = found[doc.get("skip", 0):]
        if doc.get("limit"):
            found = found[:abs(doc["limit"])]
        return {"cursor": {"id": 0, "ns": ns, "firstBatch": found}}
    if cmd == "findAndModify":
        found = select(docs, doc.get("query"), doc.get("sort"))
        if not found:
            if doc.get("upsert") and doc.get("update") is not None:
                new = upsert_doc(doc.get("query"), doc["update"])
                docs.append(new)
                return {"value": new if doc.get("new") else None,
                        "lastErrorObject": {"n": 1, "updatedExisting": False, "upserted": new["_id"]}}
            return {"value": None, "lastErrorObject": {"n": 0, "updatedExisting": False}}
        target = found[0]
        before = dict(target)
        if doc.get("remove"):
            docs.remove(target)
            return {"value": before, "lastErrorObject": {"n": 1}}
        apply_update(target, doc["update"])
        return {"value": dict(target) if doc.get("new") else before,
                "lastErrorObject": {"n": 1, "updatedExisting": True}}
    if cmd == "update":
        n = modified = 0
        upserted = []
        for i, u in enumerate(doc["updates"]):
            found = select(docs, u.get("q"))
            if not u.get("multi"):
                found = found[:1]
            for target in found:
                apply_update(target, u["u"])
                n += 1
                modified += 1
            if not found and u.get("upsert"):
                new = upsert_doc(u.get("q"), u["u"])
                docs.append(new)
                n += 1
                upserted.append({"index": i, "_id": new["_id"]})
        reply = {"n": n, "nModified": modified}
        if upserted:
            reply["upserted"] = upserted
        return reply
    if cmd == "delete":
        n = 0
        for d in doc["deletes"]:
            found = select(docs, d.get("q"))
            if d.get("limit") == 1:
                found = found[:1]
            for target in found:
                docs.remove(target)
                n += 1
        return {"n": n}
    if cmd == "count":
        return {"n": len(select(docs, doc.get("query")))}
    if cmd == "aggregate":
        found = list(docs)
        out = None
        for stage in doc["pipeline"]:
            (op, arg), = stage.items()
            if op == "$match":
                found = select(found, arg)
            elif op == "$skip":
                found = found[arg:]
            elif op == "$limit":
                found = found[:arg]
            elif op == "$group" and list(arg.values())[1:] == [{"$sum": 1}]:
                key = list(arg.keys())[1]
                out = [{"_id": arg["_id"], key: len(found)}] if found else []
            else:
                raise ValueError(f"unsupported aggregate stage {stage}")
        return {"cursor": {"id": 0, "ns": ns, "firstBatch": found if out is None else out}}
    raise ValueError(f"unsupported command {cmd}")


def responder(request):
    doc = dict(request.doc)
    cmd = next(iter(doc))
    db = doc.get("$db") or (request.namespace or "admin").split(".")[0]
    try:
        with LOCK:
            reply = handle(db, cmd, doc)
    except Exception as e:  # noqa: BLE001 - the client gets the reason
        request.command_err(code=2, errmsg=f"stand-in: {e}")
        return True
    request.replies(reply)
    return True


def main():
    server = MockupDB(auto_ismaster=False)
    server.autoresponds(Matcher(), responder)
    port = server.run()
    print(port, flush=True)
    sys.stdin.read()  # serve until the test closes our stdin or kills us
    server.stop()


if __name__ == "__main__":
    main()
