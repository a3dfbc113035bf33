# shellcheck shell=bash
# bench/lib/upstreams.sh: everything wrk talks to besides Spendpol (sourced
# by bench/run.sh): the mock upstream, plain nginx with and without
# upstream keepalive, the Portkey gateway. The nginx confs are the
# templates in bench/conf/, rendered into the run's temp dir.

# render TEMPLATE NAME=VALUE...: TEMPLATE with each @NAME@ replaced by
# VALUE. A placeholder alone on its line takes its indentation to every
# line of a multi-line VALUE. A placeholder without a value is an error,
# so a template and its caller cannot drift apart silently.
render() {
    perl -e '
        my $tpl = shift;
        my %v = map { split /=/, $_, 2 } @ARGV;
        sub val { exists $v{$_[0]} ? $v{$_[0]} : die "$tpl: no value for \@$_[0]\@\n" }
        open my $fh, "<", $tpl or die "$tpl: $!\n";
        local $/;
        my $t = <$fh>;
        $t =~ s/^([ \t]*)\@([A-Z_]+)\@[ \t]*\n/join "", map { "$1$_\n" } split m{\n}, val($2)/gme;
        $t =~ s/\@([A-Z_]+)\@/val($1)/ge;
        print $t' "$@"
}

# ngx_body FILE PREFIX: nginx `set $PREFIXn '...';` lines holding FILE
# (\ ' and newlines escaped), cut at event boundaries into pieces under
# nginx's 4 KB limit for one parameter, then the `return 200
# "$PREFIX0..."`; one `return 200 '...'` when it fits in one piece.
ngx_body() {
    grep -q '\$' "$1" && { log "$1 contains \$, which nginx's return would expand"; return 1; }
    perl -0ne '
        my @ev = split /(?<=\n\n)/, $_; my @parts = ("");
        for my $e (@ev) { push @parts, "" if length($parts[-1]) + length($e) > 3000; $parts[-1] .= $e }
        sub quoted { (my $q = $_[0]) =~ s/\\/\\\\/g; $q =~ s/\x27/\\\x27/g; $q =~ s/\n/\\n/g; $q }
        if (@parts == 1) { print "return 200 \x27", quoted($parts[0]), "\x27;\n"; exit 0 }
        my $ret = "";
        for my $i (0 .. $#parts) {
            print "set \$'"$2"'$i \x27", quoted($parts[$i]), "\x27;\n"; $ret .= "\$'"$2"'$i";
        }
        print "return 200 \"$ret\";\n";' "$1"
}

# nginx_conf NAME PORT [NAME=VALUE...]: renders bench/conf/NAME.conf into
# $WORK/NAME/nginx.conf behind bench/conf/head.conf
nginx_conf() {
    local name=$1 port=$2 dir="$WORK/$1" user_line= temp_paths
    shift 2
    mkdir -p "$dir"
    sp_is_root && user_line="user root;"
    temp_paths=$(render "$BENCH/conf/temp-paths.conf" DIR="$dir") || return 1
    {
        render "$BENCH/conf/head.conf" DIR="$dir" USER_LINE="$user_line" \
            && render "$BENCH/conf/$name.conf" DIR="$dir" PORT="$port" \
                   TEMP_PATHS="$temp_paths" "$@"
    } >"$dir/nginx.conf"
}

# start_nginx NAME PORT LABEL PIDVAR: checks and starts the plain nginx of
# $WORK/NAME/nginx.conf, its master's pid into the variable PIDVAR
start_nginx() {
    local name=$1 port=$2 label=$3 dir="$WORK/$1"
    log "$label on 127.0.0.1:$port"
    /usr/sbin/nginx -t -q -p "$dir/" -c "$dir/nginx.conf" -e "$dir/error.log" \
        || die "$label: nginx.conf invalid: $dir/nginx.conf"
    setsid /usr/sbin/nginx -p "$dir/" -c "$dir/nginx.conf" -e "$dir/error.log" \
        >>"$dir/nginx.out" 2>&1 &
    printf -v "$4" '%s' "$!"
    wait_port 127.0.0.1 "$port" "$!" "$label" "$dir/error.log"
}

start_mock() {
    local json sse
    MOCK_PORT=$(sp_free_port)
    json=$(ngx_body "$BENCH/mock/chat.json" mock_json_) || die "mock: bench/mock/chat.json"
    sse=$(ngx_body "$BENCH/mock/chat.sse" mock_sse_) || die "mock: bench/mock/chat.sse"
    nginx_conf mock "$MOCK_PORT" JSON_BODY="$json" SSE_BODY="$sse" \
        || die "mock: rendering bench/conf/mock.conf failed"
    start_nginx mock "$MOCK_PORT" "mock upstream" MOCK_PID
    sleep 0.2
    MOCK_WORKERS=$(workers_of "$MOCK_PID")
}

start_plain() {
    PLAIN_PORT=$(sp_free_port)
    nginx_conf nginx "$PLAIN_PORT" MOCK_PORT="$MOCK_PORT" \
        || die "plain nginx: rendering bench/conf/nginx.conf failed"
    start_nginx nginx "$PLAIN_PORT" "plain nginx" PLAIN_PID
}

start_nokeep() {
    NOKEEP_PORT=$(sp_free_port)
    nginx_conf nokeep "$NOKEEP_PORT" MOCK_PORT="$MOCK_PORT" \
        || die "nokeep: rendering bench/conf/nokeep.conf failed"
    start_nginx nokeep "$NOKEEP_PORT" "plain nginx without upstream keepalive" NOKEEP_PID
}

PORTKEY_DIR="$BENCH/portkey/node_modules/@portkey-ai/gateway"

# portkey_install: npm ci in bench/portkey when the gateway is missing
portkey_install() {
    [ -f "$PORTKEY_DIR/build/start-server.js" ] && return 0
    command -v npm >/dev/null \
        || die "npm is needed for the Portkey peer (make deps), or leave portkey out of BENCH_CONFIGS"
    log "npm ci in bench/portkey"
    (cd "$BENCH/portkey" && npm ci --no-audit --no-fund --loglevel=error >&2) \
        || die "npm ci in bench/portkey failed"
}

portkey_version() { jq -r .version "$PORTKEY_DIR/package.json"; }

start_portkey() {
    PK_PORT=$(sp_free_port)
    mkdir -p "$WORK/portkey"
    log "Portkey gateway $(portkey_version) on :$PK_PORT (node $(node -v))"
    (cd "$WORK/portkey" && NODE_ENV=production exec setsid node \
        "$PORTKEY_DIR/build/start-server.js" --port="$PK_PORT" --headless \
        >>"$WORK/portkey/out.log" 2>&1) &
    PORTKEY_PID=$!
    wait_port 127.0.0.1 "$PK_PORT" "$PORTKEY_PID" portkey "$WORK/portkey/out.log"
}

# verify_portkey: one JSON and one SSE request answered 200, the stream
# ending with [DONE], before any figure of Portkey's is taken
verify_portkey() {
    local kind code
    for kind in json sse; do
        target portkey "$kind"
        code=$(curl -s -o "$WORK/portkey/verify-$kind.body" -w '%{http_code}' \
            "http://127.0.0.1:$PK_PORT$T_PATH" \
            -H "Authorization: $T_AUTH" -H 'Content-Type: application/json' \
            -H "x-portkey-provider: openai" -H "${T_HEADERS##*|}" \
            -d "{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]$([ "$kind" = sse ] && echo ',"stream":true,"stream_options":{"include_usage":true}')}")
        [ "$code" = 200 ] || {
            cat "$WORK/portkey/verify-$kind.body" >&2
            tail -n 20 "$WORK/portkey/out.log" >&2
            die "Portkey $kind -> $code"
        }
    done
    grep -q '\[DONE\]' "$WORK/portkey/verify-sse.body" || die "Portkey's stream has no [DONE]"
}
