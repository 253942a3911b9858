; Inno Setup 6 script for Hearth's Windows installer. packaging/build.py runs it after PyInstaller:
;   iscc /DAppVersion=0.1.0 /DIconFile=...\hearth.ico /DDistDir=...\packaging\dist hearth.iss
; It installs per user by default (no administrator prompt; the user may choose "all users"), adds Start menu
; and optional desktop shortcuts to the windowed Hearth.exe, and puts hearth-cli.exe (console: the `hearth`
; commands and `--self-test`) beside it. Models and conversations in %LOCALAPPDATA%\Hearth are never removed.

#ifndef AppVersion
  #error Pass /DAppVersion=X.Y.Z
#endif
#ifndef DistDir
  #define DistDir "..\dist"
#endif
#ifndef IconFile
  #define IconFile "..\build\icons\hearth.ico"
#endif

[Setup]
; A fixed AppId keeps upgrades and uninstall working across versions; never change it.
AppId={{6B0F3C2E-4E8A-4C1D-9E57-2F1A8D4C7B31}
AppName=Hearth
AppVersion={#AppVersion}
AppVerName=Hearth {#AppVersion}
AppPublisher=The Hearth developers
DefaultDirName={autopf}\Hearth
DefaultGroupName=Hearth
DisableProgramGroupPage=yes
PrivilegesRequired=lowest
PrivilegesRequiredOverridesAllowed=dialog
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
MinVersion=10.0
SetupIconFile={#IconFile}
UninstallDisplayIcon={app}\Hearth.exe
OutputDir={#DistDir}
OutputBaseFilename=Hearth-{#AppVersion}-setup
Compression=lzma2/max
SolidCompression=yes
WizardStyle=modern
CloseApplications=yes

[Languages]
Name: "english"; MessagesFile: "compiler:Default.isl"

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked

[Files]
; The whole one-folder bundle: Hearth.exe, hearth-cli.exe, the CPU variants of llama.cpp and _internal\.
Source: "{#DistDir}\Hearth\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[InstallDelete]
; An upgrade must not keep libraries the new version no longer ships (ggml would still load old variants).
Type: filesandordirs; Name: "{app}\_internal"
Type: files; Name: "{app}\ggml-cpu-*.dll"

[Icons]
Name: "{autoprograms}\Hearth"; Filename: "{app}\Hearth.exe"; Comment: "Chat with language models, offline"
Name: "{autodesktop}\Hearth"; Filename: "{app}\Hearth.exe"; Tasks: desktopicon

[Run]
Filename: "{app}\Hearth.exe"; Description: "{cm:LaunchProgram,Hearth}"; Flags: nowait postinstall skipifsilent
