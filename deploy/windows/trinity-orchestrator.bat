@echo off
rem Trinity's daemons on a Windows PC: one Windows service per daemon, each restartable on
rem its own, each with its own log (.trinity\logs\NAME.log).
rem
rem   trinity-orchestrator.bat install        one service per daemon, run as your account
rem   trinity-orchestrator.bat start          start every daemon's service
rem   trinity-orchestrator.bat stop           stop them (each finishes its current step)
rem   trinity-orchestrator.bat restart NAME   restart one daemon only
rem   trinity-orchestrator.bat status         each service's state
rem   trinity-orchestrator.bat logs NAME      follow that daemon's log (Ctrl-C to stop)
rem   trinity-orchestrator.bat uninstall      stop and remove the services
rem   trinity-orchestrator.bat console [NAME] no services: each daemon in a window of its own
rem
rem NAME is git-sync, credit-monitor, wake-daemon or coordinator. The configuration is
rem TRINITY_CONFIG if set, else trinity.toml beside this file; the programs are beside this
rem file, else on PATH. install, start, stop, restart and uninstall need an administrator
rem prompt. The services run as YOUR account (install asks for its password once), not as
rem LocalSystem: the agent they start needs your Claude Code login (%USERPROFILE%\.claude),
rem your git credentials and your PATH. A service has no desktop: the agent runs unattended
rem (the default agent command); to watch it, use `console` instead of the services.
setlocal EnableExtensions EnableDelayedExpansion
set "DAEMONS=git-sync credit-monitor wake-daemon coordinator"
if "%TRINITY_CONFIG%"=="" set "TRINITY_CONFIG=%~dp0trinity.toml"
set "BIN=%~dp0"
if not exist "%BIN%git-sync.exe" (
  for %%P in (git-sync.exe) do set "BIN=%%~dp$PATH:P"
)
if "%BIN%"=="" (
  echo The Trinity programs are neither beside this file nor on PATH. See docs\operations.md.
  exit /b 1
)
set "VERB=%~1"
set "NAME=%~2"
if "%VERB%"=="" goto usage
if not exist "%TRINITY_CONFIG%" (
  echo No configuration at %TRINITY_CONFIG%: run `trinity init` first, or set TRINITY_CONFIG.
  exit /b 1
)
if not "%NAME%"=="" (
  call :check_name "%NAME%"
  if errorlevel 1 exit /b 1
)
if /i "%VERB%"=="install" goto install
if /i "%VERB%"=="start" goto start
if /i "%VERB%"=="stop" goto stop
if /i "%VERB%"=="restart" goto restart
if /i "%VERB%"=="status" goto status
if /i "%VERB%"=="logs" goto logs
if /i "%VERB%"=="uninstall" goto uninstall
if /i "%VERB%"=="console" goto console
echo Unknown verb "%VERB%".
goto usage

:usage
echo usage: trinity-orchestrator.bat install^|start^|stop^|restart NAME^|status^|logs NAME^|uninstall^|console [NAME]
exit /b 2

:check_name
set "FOUND="
for %%D in (%DAEMONS%) do if /i "%~1"=="%%D" set "FOUND=1"
if defined FOUND exit /b 0
echo Unknown daemon "%~1": one of %DAEMONS%.
exit /b 1

:install
if "%TRINITY_SERVICE_USER%"=="" set "TRINITY_SERVICE_USER=.\%USERNAME%"
if "%TRINITY_SERVICE_PASSWORD%"=="" set /p "TRINITY_SERVICE_PASSWORD=Password of %TRINITY_SERVICE_USER% (the services run as this account): "
for %%D in (%DAEMONS%) do (
  sc create trinity-%%D binPath= "\"%BIN%%%D.exe\" --service --config \"%TRINITY_CONFIG%\"" start= auto obj= "%TRINITY_SERVICE_USER%" password= "%TRINITY_SERVICE_PASSWORD%" DisplayName= "Trinity %%D" >nul
  if errorlevel 1 ( echo could not create the service trinity-%%D & exit /b 1 )
  sc description trinity-%%D "Trinity %%D: see %TRINITY_CONFIG%" >nul
  rem Restart on failure: after 5 s, 5 s, then 60 s; the count resets after a day.
  sc failure trinity-%%D reset= 86400 actions= restart/5000/restart/5000/restart/60000 >nul
  sc failureflag trinity-%%D 1 >nul
  echo installed trinity-%%D
)
exit /b 0

:start
if not "%NAME%"=="" ( sc start trinity-%NAME% >nul & echo started %NAME% & exit /b 0 )
for %%D in (%DAEMONS%) do ( sc start trinity-%%D >nul & echo started %%D )
exit /b 0

:stop
if not "%NAME%"=="" ( call :stop_one %NAME% & exit /b 0 )
for %%D in (%DAEMONS%) do call :stop_one %%D
exit /b 0

:stop_one
sc stop trinity-%1 >nul 2>nul
rem Wait up to 30 s for it to finish its step.
set /a TRIES=0
:stop_wait
sc query trinity-%1 | find "STOPPED" >nul && ( echo stopped %1 & exit /b 0 )
set /a TRIES+=1
if !TRIES! geq 30 ( echo %1 did not stop within 30 s & exit /b 1 )
ping -n 2 127.0.0.1 >nul
goto stop_wait

:restart
if "%NAME%"=="" ( echo restart needs a daemon's name: one of %DAEMONS%. & exit /b 1 )
call :stop_one %NAME%
sc start trinity-%NAME% >nul
echo started %NAME%
exit /b 0

:status
for %%D in (%DAEMONS%) do (
  set "STATE=not installed"
  for /f "tokens=4" %%S in ('sc query trinity-%%D 2^>nul ^| find "STATE"') do set "STATE=%%S"
  echo %%D	!STATE!
)
exit /b 0

:logs
if "%NAME%"=="" ( echo logs needs a daemon's name: one of %DAEMONS%. & exit /b 1 )
"%BIN%trinity.exe" --config "%TRINITY_CONFIG%" logs %NAME% --follow
exit /b %errorlevel%

:uninstall
for %%D in (%DAEMONS%) do (
  sc stop trinity-%%D >nul 2>nul
  sc delete trinity-%%D >nul 2>nul && echo removed trinity-%%D
)
exit /b 0

:console
rem cmd /k keeps the window open after the daemon exits, so its last words can be read.
if not "%NAME%"=="" ( start "Trinity %NAME%" cmd /k ""%BIN%%NAME%.exe" --config "%TRINITY_CONFIG%"" & exit /b 0 )
for %%D in (%DAEMONS%) do start "Trinity %%D" cmd /k ""%BIN%%%D.exe" --config "%TRINITY_CONFIG%""
exit /b 0
