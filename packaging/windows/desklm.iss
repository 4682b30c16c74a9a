; Inno Setup script for DeskLM: installs dist\desklm\ with Start-menu and desktop shortcuts.
; Built by packaging\build_windows.ps1 (iscc /DAppVersion=x.y.z packaging\windows\desklm.iss).
#ifndef AppVersion
  #define AppVersion "0.1.0"
#endif

[Setup]
AppId={{6B0F5E8A-3C3B-4D8C-9E47-5A2D3F0C1B7E}
AppName=DeskLM
AppVersion={#AppVersion}
AppPublisher=DeskLM developers
AppPublisherURL=https://desklm.io
DefaultDirName={autopf}\DeskLM
DefaultGroupName=DeskLM
DisableProgramGroupPage=yes
OutputDir=..\..\dist
OutputBaseFilename=DeskLM-{#AppVersion}-setup
SetupIconFile=..\..\resources\icons\desklm.ico
UninstallDisplayIcon={app}\desklm-gui.exe
Compression=lzma2/max
SolidCompression=yes
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
; per-user or all users: asked in a dialog, or /CURRENTUSER or /ALLUSERS on the command line
PrivilegesRequiredOverridesAllowed=commandline dialog
VersionInfoVersion={#AppVersion}
WizardStyle=modern

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"

[Files]
Source: "..\..\dist\desklm\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
Name: "{group}\DeskLM"; Filename: "{app}\desklm-gui.exe"; IconFilename: "{app}\desklm-gui.exe"
Name: "{group}\Uninstall DeskLM"; Filename: "{uninstallexe}"
Name: "{autodesktop}\DeskLM"; Filename: "{app}\desklm-gui.exe"; Tasks: desktopicon

[Run]
Filename: "{app}\desklm-gui.exe"; Description: "{cm:LaunchProgram,DeskLM}"; Flags: nowait postinstall skipifsilent
