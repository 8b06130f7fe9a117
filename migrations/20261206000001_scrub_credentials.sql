-- Credentials in URLs are no longer stored or shown: a git URL is registered without its
-- user name and password, and errors and audit entries mask any URL's credentials. This
-- scrubs what was stored before.

-- A repository's URL loses its credentials, unless that makes it the same as another
-- registered repository (same URL and ref); then they are masked instead.
UPDATE repositories r
SET source = regexp_replace(r.source, '^([A-Za-z][A-Za-z0-9+.-]*://)[^/@]*@', '\1')
WHERE r.source ~ '^[A-Za-z][A-Za-z0-9+.-]*://[^/@]*@'
  AND NOT EXISTS (
      SELECT 1 FROM repositories o
      WHERE o.id <> r.id AND o.git_ref = r.git_ref
        AND o.source = regexp_replace(r.source, '^([A-Za-z][A-Za-z0-9+.-]*://)[^/@]*@', '\1'));
UPDATE repositories
SET source = regexp_replace(source, '^([A-Za-z][A-Za-z0-9+.-]*://)[^/@]*@', '\1***@')
WHERE source ~ '^[A-Za-z][A-Za-z0-9+.-]*://[^/@]*@' AND source !~ '^[A-Za-z][A-Za-z0-9+.-]*://\*\*\*@';

-- Messages: the user information of any URL they quote is masked.
UPDATE runs SET error = regexp_replace(error, '(://)[^/@\s"'']*@', '\1***@', 'g')
WHERE error ~ '://[^/@\s"'']*@';
UPDATE stage_runs SET last_error = regexp_replace(last_error, '(://)[^/@\s"'']*@', '\1***@', 'g')
WHERE last_error ~ '://[^/@\s"'']*@';
UPDATE audit_log SET message = regexp_replace(message, '(://)[^/@\s"'']*@', '\1***@', 'g')
WHERE message ~ '://[^/@\s"'']*@';
UPDATE audit_log
SET parameters = regexp_replace(parameters::text, '(://)[^/@\s"'']*@', '\1***@', 'g')::jsonb
WHERE parameters::text ~ '://[^/@\s"'']*@';
