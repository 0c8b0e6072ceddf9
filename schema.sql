-- trilio-dms ledger schema for MySQL 5.7+ / MariaDB 10.3+ (Galera included), for an empty database:
--   mysql -u dms_user -p trilio_dms < schema.sql
-- or: trilio-dms migrate (which also upgrades tables of an earlier version: columns and indexes). A client never creates or
-- alters them: it checks them when it starts and needs only SELECT, INSERT and UPDATE on both.

-- The ledger, exactly as in the DMS client guide: one row per (job, target, host) hold; rows are
-- soft-deleted, so the table is also the mount history (until `trilio-dms purge` removes old rows that
-- hold nothing).
CREATE TABLE IF NOT EXISTS backup_target_mount_ledger (
    id INT AUTO_INCREMENT PRIMARY KEY,
    created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
    deleted_at DATETIME NULL,
    deleted BOOLEAN NOT NULL DEFAULT FALSE,
    version VARCHAR(32),
    backup_target_id VARCHAR(255) NOT NULL,
    jobid INT NOT NULL,
    host VARCHAR(255) NOT NULL,
    mounted BOOLEAN NOT NULL DEFAULT FALSE,

    INDEX idx_backup_target_id (backup_target_id),
    INDEX idx_jobid (jobid),
    INDEX idx_host (host),
    INDEX idx_job_target (jobid, backup_target_id),
    INDEX idx_mounted_host (mounted, host),
    INDEX idx_deleted (deleted)
);

-- Three indexes of ours on the guide's table, for a ledger of years (10 M rows: see the README's
-- Performance): getActiveMounts' pages in id order (the primary key completes every secondary index), a
-- target's active rows, and a target's newest history rows, each without reading the whole history. On
-- a table made earlier, `trilio-dms migrate` adds them.
CREATE INDEX idx_active ON backup_target_mount_ledger (mounted, deleted);
CREATE INDEX idx_target_mounted ON backup_target_mount_ledger (backup_target_id, mounted);
CREATE INDEX idx_target_created ON backup_target_mount_ledger (backup_target_id, created_at);

-- One row per (target, host): a fenced lease (owner + expires_at, UTC) under which the ledger rows of
-- that pair are changed, the path and type (nfs | s3) the target is mounted with on the host, the
-- operation whose outcome is not yet known (pending_op, until pending_deadline, on pending_path with
-- pending_type, marked by the lease owner pending_owner), and the client process that reserved the next
-- turn (waiter, refreshed at waiter_at while it polls); last_write is the token of the last fenced
-- write. lock_key = hex SHA-1 of backup_target_id, a NUL byte, and host.
CREATE TABLE IF NOT EXISTS backup_target_mount_lock (
    lock_key CHAR(40) NOT NULL PRIMARY KEY,
    backup_target_id VARCHAR(255) NOT NULL,
    host VARCHAR(255) NOT NULL,
    mount_path VARCHAR(4096) NULL,
    target_type VARCHAR(8) NULL,
    owner CHAR(36) NULL,
    expires_at DATETIME(3) NULL,
    pending_op VARCHAR(16) NULL,
    pending_deadline DATETIME(3) NULL,
    waiter CHAR(36) NULL,
    waiter_at DATETIME(3) NULL,
    updated_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    pending_owner CHAR(36) NULL,
    pending_path VARCHAR(4096) NULL,
    pending_type VARCHAR(8) NULL,
    last_write CHAR(36) NULL,

    INDEX idx_lock_host (host),
    INDEX idx_lock_host_target (host, backup_target_id)
);
