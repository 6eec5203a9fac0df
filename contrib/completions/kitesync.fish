# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_kitesync_global_optspecs
    string join \n c/config= log-format= once enrich-seconds= without-test-results pace= dry-run backfill since= until= h/help V/version
end

function __fish_kitesync_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_kitesync_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_kitesync_using_subcommand
    set -l cmd (__fish_kitesync_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c kitesync -n "__fish_kitesync_needs_command" -s c -l config -d 'The TOML config file (every key may also be set as KITESYNC_SECTION__KEY)' -r -F
complete -c kitesync -n "__fish_kitesync_needs_command" -l log-format -d 'Log lines as text, as JSON objects one per line, or to the systemd journal; auto (the default) is the journal when stderr is connected to it, else text. Level from RUST_LOG' -r -f -a "auto\t'The journal when stderr is connected to it (a systemd unit), else text'
text\t'Text lines on stderr'
json\t'One JSON object per line on stderr'
journald\t'The systemd journal\'s native protocol (falls back to text when there is no journal)'"
complete -c kitesync -n "__fish_kitesync_needs_command" -l enrich-seconds -d 'With --once: after delivering the builds, fetch test results and logs for at most this many seconds; the rest stays queued for the next run (0: leave them all)' -r
complete -c kitesync -n "__fish_kitesync_needs_command" -l pace -d 'With --once or --backfill: how fast to go. configured: [buildkite] requests_per_minute; free: what Buildkite\'s budgets show free above reserve_percent, spread until their reset (never beyond requests_per_minute without the token owner\'s budget, and leaving requests_per_minute to a daemon on the same state database)' -r -f -a "configured\t'`[buildkite] requests_per_minute`'
free\t'What Buildkite\'s budgets show free above the reserve, spread until their reset'"
complete -c kitesync -n "__fish_kitesync_needs_command" -l since -d 'Start of the backfill range (RFC 3339, e.g. 2025-01-01T00:00:00Z, or a date)' -r
complete -c kitesync -n "__fish_kitesync_needs_command" -l until -d 'End of the backfill range, exclusive. Default: when the first run of this backfill (same --since) started, so that running the same command again resumes it' -r
complete -c kitesync -n "__fish_kitesync_needs_command" -l once -d 'Poll once, deliver, and exit: 0 when everything was delivered'
complete -c kitesync -n "__fish_kitesync_needs_command" -l without-test-results -d 'With --backfill: fetch no test results or logs for the range (see [enrich] backfill)'
complete -c kitesync -n "__fish_kitesync_needs_command" -l dry-run -d 'With --once or --backfill: poll as usual, but print what would be delivered as NDJSON on stdout instead of sending it, and change no state'
complete -c kitesync -n "__fish_kitesync_needs_command" -l backfill -d 'Deliver every finished build created from --since to --until, then exit. Resumable: run the same command again after an interruption'
complete -c kitesync -n "__fish_kitesync_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c kitesync -n "__fish_kitesync_needs_command" -s V -l version -d 'Print version'
complete -c kitesync -n "__fish_kitesync_needs_command" -f -a "check" -d 'Check the config, the Buildkite token and its scopes against the enabled features, the organization, the rate budget and BuildButler\'s API key; stores nothing'
complete -c kitesync -n "__fish_kitesync_needs_command" -f -a "status" -d 'Show the cursor, the outbox, dead letters, backfills and the last rate budget seen, from the state database alone (no network)'
complete -c kitesync -n "__fish_kitesync_needs_command" -f -a "replay" -d 'Send again, as upserts, on the next poll or --once: dead letters, one build still in the outbox, or every finished build created in a time range'
complete -c kitesync -n "__fish_kitesync_needs_command" -f -a "completions" -d 'Print a shell completion script on stdout (the .deb installs bash\'s, zsh\'s and fish\'s)'
complete -c kitesync -n "__fish_kitesync_needs_command" -f -a "manpages" -d 'Write the man pages (kitesync.1 and one per subcommand) into DIR'
complete -c kitesync -n "__fish_kitesync_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c kitesync -n "__fish_kitesync_using_subcommand check" -s c -l config -d 'The TOML config file (every key may also be set as KITESYNC_SECTION__KEY)' -r -F
complete -c kitesync -n "__fish_kitesync_using_subcommand check" -l log-format -d 'Log lines as text, as JSON objects one per line, or to the systemd journal; auto (the default) is the journal when stderr is connected to it, else text. Level from RUST_LOG' -r -f -a "auto\t'The journal when stderr is connected to it (a systemd unit), else text'
text\t'Text lines on stderr'
json\t'One JSON object per line on stderr'
journald\t'The systemd journal\'s native protocol (falls back to text when there is no journal)'"
complete -c kitesync -n "__fish_kitesync_using_subcommand check" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c kitesync -n "__fish_kitesync_using_subcommand status" -s c -l config -d 'The TOML config file (every key may also be set as KITESYNC_SECTION__KEY)' -r -F
complete -c kitesync -n "__fish_kitesync_using_subcommand status" -l log-format -d 'Log lines as text, as JSON objects one per line, or to the systemd journal; auto (the default) is the journal when stderr is connected to it, else text. Level from RUST_LOG' -r -f -a "auto\t'The journal when stderr is connected to it (a systemd unit), else text'
text\t'Text lines on stderr'
json\t'One JSON object per line on stderr'
journald\t'The systemd journal\'s native protocol (falls back to text when there is no journal)'"
complete -c kitesync -n "__fish_kitesync_using_subcommand status" -l json -d 'Print JSON instead of a table'
complete -c kitesync -n "__fish_kitesync_using_subcommand status" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c kitesync -n "__fish_kitesync_using_subcommand replay" -l build -d 'One build, by its Buildkite UUID' -r
complete -c kitesync -n "__fish_kitesync_using_subcommand replay" -l since -d 'Every finished build created from this time (fetched from Buildkite now)' -r
complete -c kitesync -n "__fish_kitesync_using_subcommand replay" -l until -d '...until this time, exclusive (default: now)' -r
complete -c kitesync -n "__fish_kitesync_using_subcommand replay" -s c -l config -d 'The TOML config file (every key may also be set as KITESYNC_SECTION__KEY)' -r -F
complete -c kitesync -n "__fish_kitesync_using_subcommand replay" -l log-format -d 'Log lines as text, as JSON objects one per line, or to the systemd journal; auto (the default) is the journal when stderr is connected to it, else text. Level from RUST_LOG' -r -f -a "auto\t'The journal when stderr is connected to it (a systemd unit), else text'
text\t'Text lines on stderr'
json\t'One JSON object per line on stderr'
journald\t'The systemd journal\'s native protocol (falls back to text when there is no journal)'"
complete -c kitesync -n "__fish_kitesync_using_subcommand replay" -l dead -d 'Every dead letter'
complete -c kitesync -n "__fish_kitesync_using_subcommand replay" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c kitesync -n "__fish_kitesync_using_subcommand completions" -s c -l config -d 'The TOML config file (every key may also be set as KITESYNC_SECTION__KEY)' -r -F
complete -c kitesync -n "__fish_kitesync_using_subcommand completions" -l log-format -d 'Log lines as text, as JSON objects one per line, or to the systemd journal; auto (the default) is the journal when stderr is connected to it, else text. Level from RUST_LOG' -r -f -a "auto\t'The journal when stderr is connected to it (a systemd unit), else text'
text\t'Text lines on stderr'
json\t'One JSON object per line on stderr'
journald\t'The systemd journal\'s native protocol (falls back to text when there is no journal)'"
complete -c kitesync -n "__fish_kitesync_using_subcommand completions" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c kitesync -n "__fish_kitesync_using_subcommand manpages" -s c -l config -d 'The TOML config file (every key may also be set as KITESYNC_SECTION__KEY)' -r -F
complete -c kitesync -n "__fish_kitesync_using_subcommand manpages" -l log-format -d 'Log lines as text, as JSON objects one per line, or to the systemd journal; auto (the default) is the journal when stderr is connected to it, else text. Level from RUST_LOG' -r -f -a "auto\t'The journal when stderr is connected to it (a systemd unit), else text'
text\t'Text lines on stderr'
json\t'One JSON object per line on stderr'
journald\t'The systemd journal\'s native protocol (falls back to text when there is no journal)'"
complete -c kitesync -n "__fish_kitesync_using_subcommand manpages" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c kitesync -n "__fish_kitesync_using_subcommand help; and not __fish_seen_subcommand_from check status replay completions manpages help" -f -a "check" -d 'Check the config, the Buildkite token and its scopes against the enabled features, the organization, the rate budget and BuildButler\'s API key; stores nothing'
complete -c kitesync -n "__fish_kitesync_using_subcommand help; and not __fish_seen_subcommand_from check status replay completions manpages help" -f -a "status" -d 'Show the cursor, the outbox, dead letters, backfills and the last rate budget seen, from the state database alone (no network)'
complete -c kitesync -n "__fish_kitesync_using_subcommand help; and not __fish_seen_subcommand_from check status replay completions manpages help" -f -a "replay" -d 'Send again, as upserts, on the next poll or --once: dead letters, one build still in the outbox, or every finished build created in a time range'
complete -c kitesync -n "__fish_kitesync_using_subcommand help; and not __fish_seen_subcommand_from check status replay completions manpages help" -f -a "completions" -d 'Print a shell completion script on stdout (the .deb installs bash\'s, zsh\'s and fish\'s)'
complete -c kitesync -n "__fish_kitesync_using_subcommand help; and not __fish_seen_subcommand_from check status replay completions manpages help" -f -a "manpages" -d 'Write the man pages (kitesync.1 and one per subcommand) into DIR'
complete -c kitesync -n "__fish_kitesync_using_subcommand help; and not __fish_seen_subcommand_from check status replay completions manpages help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
