@echo off
rem Starts Trinity's daemons for this PC, each in a console window of its own.
rem   start-trinity.bat              starts git-sync, wake-daemon, credit-monitor and coordinator
rem   start-trinity.bat wake-daemon  (re)starts that one only, after its window was closed
rem The configuration is TRINITY_CONFIG if set, else trinity.toml beside this file.
rem Each daemon logs to .trinity\logs\<name>.log: `trinity logs <name> -f` follows it.
setlocal
if "%TRINITY_CONFIG%"=="" set "TRINITY_CONFIG=%~dp0trinity.toml"
if not exist "%TRINITY_CONFIG%" (
  echo No configuration at %TRINITY_CONFIG%: run `trinity init` first, or set TRINITY_CONFIG.
  exit /b 1
)
if not "%~1"=="" (
  call :one %1
  exit /b
)
call :one git-sync
call :one wake-daemon
call :one credit-monitor
call :one coordinator
exit /b 0

:one
rem cmd /k keeps the window open after the daemon exits, so its last words can be read.
start "Trinity %~1" cmd /k %~1 --config "%TRINITY_CONFIG%"
exit /b 0
