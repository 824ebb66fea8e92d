"""The meta store's tables (private to ``metastore``): portable SQL for SQLite and PostgreSQL.

Times are epoch seconds (DOUBLE PRECISION), ids are text made by ``domain.ids``, JSON
values are text; every statement is idempotent (IF NOT EXISTS), run at each start.
"""

SCHEMA = """
CREATE TABLE IF NOT EXISTS tenants (
    id TEXT PRIMARY KEY, created_at DOUBLE PRECISION NOT NULL, profile_yaml TEXT NOT NULL,
    bundle_dir TEXT NOT NULL, coredms_url TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS api_keys (
    key_hash TEXT PRIMARY KEY, tenant TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    created_at DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS api_key_expiry (
    key_hash TEXT PRIMARY KEY REFERENCES api_keys(key_hash) ON DELETE CASCADE,
    expires_at DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY, tenant TEXT NOT NULL, name TEXT NOT NULL, sha256 TEXT NOT NULL,
    size_bytes BIGINT NOT NULL, format TEXT NOT NULL, status TEXT NOT NULL,
    received_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL, path TEXT NOT NULL,
    app TEXT NOT NULL DEFAULT '', dataset TEXT NOT NULL DEFAULT '', attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at DOUBLE PRECISION NOT NULL DEFAULT 0, rows_total BIGINT NOT NULL DEFAULT 0,
    rows_written BIGINT NOT NULL DEFAULT 0, rows_rejected BIGINT NOT NULL DEFAULT 0,
    rows_skipped BIGINT NOT NULL DEFAULT 0, reasons TEXT NOT NULL DEFAULT '[]',
    run_id TEXT NOT NULL DEFAULT '', lease_owner TEXT NOT NULL DEFAULT '',
    lease_expires_at DOUBLE PRECISION NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS files_tenant_sha ON files (tenant, sha256);
CREATE INDEX IF NOT EXISTS files_status ON files (status, next_attempt_at);
CREATE INDEX IF NOT EXISTS files_tenant_received ON files (tenant, received_at);
CREATE TABLE IF NOT EXISTS file_events (
    file_id TEXT NOT NULL, at DOUBLE PRECISION NOT NULL, status TEXT NOT NULL, detail TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS file_events_file ON file_events (file_id, at);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, file_id TEXT NOT NULL, tenant TEXT NOT NULL, app TEXT NOT NULL,
    attempt INTEGER NOT NULL, started_at DOUBLE PRECISION NOT NULL, status TEXT,
    ended_at DOUBLE PRECISION, exit_code INTEGER, rows_written BIGINT NOT NULL DEFAULT 0,
    rows_rejected BIGINT NOT NULL DEFAULT 0, bytes_read BIGINT NOT NULL DEFAULT 0,
    peak_rss_bytes BIGINT NOT NULL DEFAULT 0, error TEXT NOT NULL DEFAULT '',
    stderr_tail TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS runs_tenant ON runs (tenant, started_at);
CREATE TABLE IF NOT EXISTS quarantine (
    tenant TEXT NOT NULL, file_id TEXT NOT NULL, run_id TEXT NOT NULL, line BIGINT NOT NULL,
    raw TEXT NOT NULL, reason TEXT NOT NULL, at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (tenant, file_id, line));
CREATE TABLE IF NOT EXISTS heartbeats (
    component TEXT PRIMARY KEY, owner TEXT NOT NULL, at DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS stream_targets (
    tenant TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE, stream TEXT NOT NULL,
    app TEXT NOT NULL, instances INTEGER NOT NULL, updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (tenant, stream, app));
CREATE TABLE IF NOT EXISTS stream_instances (
    id TEXT PRIMARY KEY, tenant TEXT NOT NULL, stream TEXT NOT NULL, app TEXT NOT NULL,
    state TEXT NOT NULL, pid INTEGER NOT NULL DEFAULT 0, started_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL, restarts INTEGER NOT NULL DEFAULT 0,
    exit_detail TEXT NOT NULL DEFAULT '', stderr_tail TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS stream_instances_tenant ON stream_instances (tenant, stream, app);
CREATE TABLE IF NOT EXISTS stream_decisions (
    at DOUBLE PRECISION NOT NULL, tenant TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    stream TEXT NOT NULL, app TEXT NOT NULL, from_instances INTEGER NOT NULL,
    to_instances INTEGER NOT NULL, reason TEXT NOT NULL, inputs TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS stream_decisions_tenant ON stream_decisions (tenant, at);
CREATE TABLE IF NOT EXISTS stream_reports (
    at DOUBLE PRECISION NOT NULL, tenant TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    stream TEXT NOT NULL, app TEXT NOT NULL, instance TEXT NOT NULL, period_s DOUBLE PRECISION NOT NULL,
    messages BIGINT NOT NULL, records BIGINT NOT NULL, bytes BIGINT NOT NULL, errors BIGINT NOT NULL,
    latency_avg_ms DOUBLE PRECISION NOT NULL, latency_p95_ms DOUBLE PRECISION NOT NULL,
    backlog BIGINT NOT NULL, latency_p50_ms DOUBLE PRECISION NOT NULL DEFAULT 0,
    latency_n BIGINT NOT NULL DEFAULT 0, latency_sum_ms DOUBLE PRECISION NOT NULL DEFAULT 0,
    latency_counts TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS stream_reports_tenant ON stream_reports (tenant, at);
CREATE TABLE IF NOT EXISTS notifications (
    id TEXT PRIMARY KEY, tenant TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    event TEXT NOT NULL, url TEXT NOT NULL, payload TEXT NOT NULL, status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, created_at DOUBLE PRECISION NOT NULL,
    next_attempt_at DOUBLE PRECISION NOT NULL, delivered_at DOUBLE PRECISION,
    last_status_code INTEGER, last_error TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS notifications_due ON notifications (status, next_attempt_at);
CREATE INDEX IF NOT EXISTS notifications_tenant ON notifications (tenant, created_at);
CREATE TABLE IF NOT EXISTS file_chunks (
    file_id TEXT NOT NULL, idx INTEGER NOT NULL, tenant TEXT NOT NULL, start_byte BIGINT NOT NULL,
    end_byte BIGINT NOT NULL, first_line BIGINT NOT NULL, status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at DOUBLE PRECISION NOT NULL DEFAULT 0,
    worker TEXT NOT NULL DEFAULT '', lease_expires_at DOUBLE PRECISION NOT NULL DEFAULT 0,
    run_id TEXT NOT NULL DEFAULT '', rows_written BIGINT NOT NULL DEFAULT 0,
    rows_rejected BIGINT NOT NULL DEFAULT 0, rows_skipped BIGINT NOT NULL DEFAULT 0,
    bytes_read BIGINT NOT NULL DEFAULT 0, started_at DOUBLE PRECISION NOT NULL DEFAULT 0,
    ended_at DOUBLE PRECISION NOT NULL DEFAULT 0, error TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (file_id, idx));
CREATE INDEX IF NOT EXISTS file_chunks_status ON file_chunks (status, tenant);
CREATE TABLE IF NOT EXISTS file_quality (
    file_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, at DOUBLE PRECISION NOT NULL,
    rows_checked BIGINT NOT NULL, rows_failed BIGINT NOT NULL, failed_by_rule TEXT NOT NULL,
    max_bad_row_ratio DOUBLE PRECISION NOT NULL, verdict TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS file_quality_tenant ON file_quality (tenant, at);
CREATE TABLE IF NOT EXISTS stream_quality (
    at DOUBLE PRECISION NOT NULL, tenant TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    stream TEXT NOT NULL, app TEXT NOT NULL, instance TEXT NOT NULL, rows_checked BIGINT NOT NULL,
    rows_failed BIGINT NOT NULL, failed_by_rule TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS stream_quality_tenant ON stream_quality (tenant, at);
CREATE TABLE IF NOT EXISTS quarantine_purges (
    id TEXT PRIMARY KEY, tenant TEXT NOT NULL, selection TEXT NOT NULL, entries BIGINT NOT NULL,
    purged_by TEXT NOT NULL, via TEXT NOT NULL, at DOUBLE PRECISION NOT NULL, reasons TEXT NOT NULL DEFAULT '[]');
CREATE INDEX IF NOT EXISTS quarantine_purges_tenant ON quarantine_purges (tenant, at);
CREATE TABLE IF NOT EXISTS upload_keys (
    tenant TEXT NOT NULL, key TEXT NOT NULL, file_id TEXT NOT NULL, status_code INTEGER NOT NULL,
    created_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (tenant, key));
CREATE TABLE IF NOT EXISTS tus_uploads (
    id TEXT PRIMARY KEY, tenant TEXT NOT NULL, name TEXT NOT NULL, length_bytes BIGINT NOT NULL,
    path TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL, expires_at DOUBLE PRECISION NOT NULL,
    file_id TEXT NOT NULL DEFAULT '', status_code INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS tus_uploads_tenant ON tus_uploads (tenant, expires_at);
CREATE TABLE IF NOT EXISTS worker_tokens (
    id TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE, name TEXT NOT NULL DEFAULT '',
    created_at DOUBLE PRECISION NOT NULL, revoked_at DOUBLE PRECISION NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS worker_claims (
    run_id TEXT PRIMARY KEY, token_id TEXT NOT NULL, worker TEXT NOT NULL, tenant TEXT NOT NULL,
    file_id TEXT NOT NULL, idx INTEGER NOT NULL, ranges TEXT NOT NULL, bundle_version TEXT NOT NULL,
    claimed_at DOUBLE PRECISION NOT NULL, ended_at DOUBLE PRECISION NOT NULL DEFAULT 0,
    outcome TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS worker_claims_file ON worker_claims (file_id, claimed_at);
CREATE INDEX IF NOT EXISTS worker_claims_token ON worker_claims (token_id, ended_at);
"""
