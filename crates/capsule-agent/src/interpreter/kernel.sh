# Capsule bash kernel: the start-up lines of an interactive bash (started with
# --norc --noprofile --noediting +m -i, standard error on fd 4, events on fd 3).
#
# Each run then arrives as two lines on standard input:
#   __capsule_status=130; __capsule_env NAME VALUE ...; eval $'CODE' </dev/null; __capsule_status=$?
#   __capsule_finish ID
# The code runs in this shell, so variables, functions and the working
# directory carry over. SIGINT makes an interactive bash drop the rest of the
# line it is running, so an interrupted run skips straight to the second line.
PS1= PS2= PROMPT_COMMAND=
exec 2>&4 4>&-
exec {__capsule_events}>&3 3>&-
set +o history +H
unset HISTFILE
__capsule_count=0
__capsule_restore=
__capsule_env() {
  __capsule_restore=
  local q
  while (($# >= 2)); do
    if [[ -v $1 ]]; then
      printf -v q %q "${!1}"
      __capsule_restore+="export $1=$q;"
    else
      __capsule_restore+="unset $1;"
    fi
    export "$1=$2"
    shift 2
  done
}
__capsule_finish() {
  local status=$__capsule_status
  eval "$__capsule_restore"
  __capsule_restore=
  __capsule_count=$((__capsule_count + 1))
  if ((status == 130)); then
    printf '{"type":"error","name":"KeyboardInterrupt","value":"execution interrupted","traceback":""}\n' >&"$__capsule_events"
  elif ((status != 0)); then
    printf '{"type":"error","name":"ExitStatus","value":"exit status %d","traceback":""}\n' "$status" >&"$__capsule_events"
  fi
  printf '\036capsule-end-%s\036\n' "$1"
  printf '\036capsule-end-%s\036\n' "$1" >&2
  printf '{"type":"done","id":%s,"execution_count":%s}\n' "$1" "$__capsule_count" >&"$__capsule_events"
}
printf '{"type":"ready","language":"bash"}\n' >&"$__capsule_events"
