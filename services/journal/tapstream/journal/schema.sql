-- The journal index (recovery site). Idempotent: run at every start.
create table if not exists journal_events (
    group_name text   not null,
    volume     text   not null,
    seq        bigint not null,
    kind       text   not null,   -- Write | Zero | Flush | Checkpoint | SyncStart | SyncBlock | SyncEnd
    off        bigint not null,   -- byte range the event changes (0/0 when none)
    len        bigint not null,
    ts         bigint not null,   -- microseconds
    topic      text   not null,
    kpartition int    not null,
    koffset    bigint not null,
    checksum   bigint,
    primary key (group_name, volume, seq)
);
create table if not exists journal_checkpoints (
    group_name  text   not null,
    id          text   not null,
    tag         text,
    ts          bigint not null,
    volume      text   not null,
    seq         bigint not null,  -- the marker's seq in this volume's stream
    volume_size bigint not null,
    volumes     text[] not null,  -- every volume of the cut
    primary key (group_name, id, volume)
);
create index if not exists journal_checkpoints_tag on journal_checkpoints (group_name, tag);
create table if not exists journal_offsets (
    topic       text   not null,
    kpartition  int    not null,
    next_offset bigint not null,
    primary key (topic, kpartition)
);
create table if not exists journal_applied (
    group_name text   not null,
    volume     text   not null,
    seq        bigint not null,   -- replica's applied seq, from Progress records
    primary key (group_name, volume)
);
-- Tags asked for on tapstream.control (CHECKPOINT_TAG: an analyzer's "last-clean", `tapstream checkpoint
-- keep`), beside the checkpoint's own tag, which they never overwrite. Rebuilt from the control topic.
create table if not exists journal_checkpoint_tags (
    group_name text    not null,
    id         text    not null,  -- checkpoint id (its markers may be indexed later than the tag)
    tag        text    not null,
    keep       boolean not null,  -- the recovery VDSA holds the replica at a kept checkpoint
    reason     text    not null default '',
    sender     text    not null default '',
    ts         bigint  not null,  -- of the command that set `keep`; the later command wins
    primary key (group_name, id, tag)
);
create index if not exists journal_checkpoint_tags_tag on journal_checkpoint_tags (group_name, tag);
